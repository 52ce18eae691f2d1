//! Lines of a capture file, read into one buffer and handed out in place.
//!
//! `BufRead::read_until` copies every line out of the reader's buffer into
//! the caller's: a second pass over every byte of a capture, a few percent
//! of a replay. Here the file is read straight into a buffer that the lines
//! are then borrowed from; the only bytes moved are those of a line cut off
//! at the buffer's end, moved to its front before the next read. A line
//! longer than the buffer doubles it, so the buffer ends up as large as the
//! longest line (a page of items near 400 KB is megabytes), as the line
//! buffer it replaces did.
//!
//! How much is moved depends on how many lines the buffer holds. Holding
//! one, nearly every line is cut off at the end and moved: on captures of
//! pages near 700 KB in a 1 MiB buffer that was half the file copied again,
//! 1-2% of a replay. So the buffer grows to hold a few of the longest lines
//! seen ([`LINES_HELD`]), and then about one line in eight is moved. The
//! growth is bounded ([`MAX_HEADROOM`]): for lines of hundreds of megabytes,
//! memory matters more than one more copy.

use std::io::{ErrorKind, Read};
use std::ops::Range;

/// Bytes read per call when the buffer has room.
const INITIAL_CAPACITY: usize = 1 << 20;

/// How many of the longest lines seen the buffer grows to hold.
const LINES_HELD: usize = 4;

/// At most this much room beyond the longest line is kept for the others.
const MAX_HEADROOM: usize = 8 << 20;

pub(crate) struct LineReader<R> {
    input: R,
    /// Zeroed once, when it grows; `start..end` is read and not handed out.
    buf: Vec<u8>,
    start: usize,
    /// Where the search for the next newline resumes (`start..scan` has
    /// none).
    scan: usize,
    end: usize,
    eof: bool,
    /// The longest line handed out so far.
    longest: usize,
    /// Bytes moved to the front so far.
    #[cfg(test)]
    moved: usize,
}

impl<R: Read> LineReader<R> {
    pub(crate) fn new(input: R) -> Self {
        Self::with_capacity(INITIAL_CAPACITY, input)
    }

    fn with_capacity(capacity: usize, input: R) -> Self {
        LineReader {
            input,
            buf: vec![0; capacity.max(1)],
            start: 0,
            scan: 0,
            end: 0,
            eof: false,
            longest: 0,
            #[cfg(test)]
            moved: 0,
        }
    }

    /// The next line, its `\n` included (the last line may lack one), as a
    /// range of [`LineReader::bytes`]; `None` at the end of the input.
    pub(crate) fn next_line(&mut self) -> std::io::Result<Option<Range<usize>>> {
        loop {
            if let Some(at) = memchr::memchr(b'\n', &self.buf[self.scan..self.end]) {
                let line = self.start..self.scan + at + 1;
                self.start = line.end;
                self.scan = line.end;
                self.longest = self.longest.max(line.len());
                return Ok(Some(line));
            }
            self.scan = self.end;
            if self.eof {
                if self.start == self.end {
                    return Ok(None);
                }
                let line = self.start..self.end;
                self.start = self.end;
                return Ok(Some(line));
            }
            self.fill()?;
        }
    }

    /// The buffer that [`LineReader::next_line`]'s ranges index, valid until
    /// the next call.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// The buffer, lent out whole: a caller that must borrow its reader
    /// mutably while it reads a line takes the bytes along, and hands them
    /// back with [`LineReader::restore`] before the next call.
    pub(crate) fn lend(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }

    /// Takes back what [`LineReader::lend`] lent.
    pub(crate) fn restore(&mut self, buf: Vec<u8>) {
        self.buf = buf;
    }

    /// Everything not yet handed out, then the rest of the input, appended
    /// to `out`.
    pub(crate) fn read_rest(&mut self, out: &mut Vec<u8>) -> std::io::Result<()> {
        out.extend_from_slice(&self.buf[self.start..self.end]);
        self.start = self.end;
        self.scan = self.end;
        self.input.read_to_end(out)?;
        self.eof = true;
        Ok(())
    }

    /// Reads more after `end`, making room first: the buffer grows while it
    /// holds fewer than [`LINES_HELD`] of the longest lines, the unread part
    /// moves to the front otherwise, and the buffer doubles when that part
    /// fills it.
    fn fill(&mut self) -> std::io::Result<()> {
        if self.end == self.buf.len() {
            let wanted = buffer_for(self.longest);
            if self.buf.len() < wanted {
                self.buf.resize(wanted, 0);
            } else if self.start > 0 {
                #[cfg(test)]
                {
                    self.moved += self.end - self.start;
                }
                self.buf.copy_within(self.start..self.end, 0);
                self.scan -= self.start;
                self.end -= self.start;
                self.start = 0;
            } else {
                self.buf.resize(self.buf.len() * 2, 0);
            }
        }
        loop {
            match self.input.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(n) => {
                    self.end += n;
                    return Ok(());
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// The size a buffer grows to when its longest line so far is `longest`.
fn buffer_for(longest: usize) -> usize {
    longest
        .saturating_mul(LINES_HELD)
        .min(longest.saturating_add(MAX_HEADROOM))
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader};

    use proptest::prelude::*;

    use super::*;

    /// Every line `LineReader` hands out, read with a buffer of `capacity`.
    fn lines(text: &[u8], capacity: usize, read_size: usize) -> Vec<Vec<u8>> {
        let mut reader = LineReader::with_capacity(capacity, Trickle(text, read_size));
        let mut out = Vec::new();
        while let Some(line) = reader.next_line().unwrap() {
            out.push(reader.bytes()[line].to_vec());
        }
        out
    }

    /// A reader that gives at most `.1` bytes per call, as pipes and
    /// decompressors may.
    struct Trickle<'a>(&'a [u8], usize);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.1).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    /// What `BufRead::read_until` makes of the same text.
    fn std_lines(text: &[u8]) -> Vec<Vec<u8>> {
        let mut reader = BufReader::new(text);
        let mut out = Vec::new();
        loop {
            let mut line = Vec::new();
            if reader.read_until(b'\n', &mut line).unwrap() == 0 {
                return out;
            }
            out.push(line);
        }
    }

    #[test]
    fn lines_keep_their_newline_and_the_last_may_lack_one() {
        let text = b"ab\ncdefgh\n\nij";
        assert_eq!(lines(text, 3, 2), [&b"ab\n"[..], b"cdefgh\n", b"\n", b"ij"]);
        assert!(lines(b"", 4, 4).is_empty());
    }

    #[test]
    fn the_rest_follows_what_was_read_ahead() {
        let mut reader = LineReader::with_capacity(8, Trickle(b"{\"a\":\n1}\n{}", 8));
        let first = reader.next_line().unwrap().unwrap();
        assert_eq!(&reader.bytes()[first], b"{\"a\":\n");
        let mut rest = Vec::new();
        reader.read_rest(&mut rest).unwrap();
        assert_eq!(rest, b"1}\n{}");
        assert_eq!(reader.next_line().unwrap(), None);
    }

    #[test]
    fn the_buffer_grows_to_hold_several_lines_so_few_are_moved() {
        // Lines of 700 bytes in a buffer of 1,024, as pages near 700 KB
        // were in 1 MiB: at that size nearly every line was cut off at the
        // buffer's end and moved.
        let line = [b"x".repeat(699), b"\n".to_vec()].concat();
        let text = line.repeat(200);
        let mut reader = LineReader::with_capacity(1024, Trickle(&text, usize::MAX));
        let mut count = 0;
        while let Some(read) = reader.next_line().unwrap() {
            assert_eq!(&reader.bytes()[read], &line[..]);
            count += 1;
        }
        assert_eq!(count, 200);
        assert_eq!(reader.bytes().len(), LINES_HELD * line.len());
        assert!(
            reader.moved <= text.len() / 6,
            "{} of {} bytes moved",
            reader.moved,
            text.len()
        );
    }

    #[test]
    fn room_for_several_lines_is_bounded_for_long_ones() {
        assert_eq!(buffer_for(0), 0);
        assert_eq!(buffer_for(700 << 10), 4 * (700 << 10));
        assert_eq!(buffer_for(100 << 20), (100 << 20) + MAX_HEADROOM);
        assert_eq!(buffer_for(usize::MAX), usize::MAX);
    }

    proptest! {
        #[test]
        fn lines_are_those_read_until_reads(
            text in proptest::collection::vec(
                prop_oneof![Just(b'\n'), Just(b'x'), any::<u8>()], 0..200),
            capacity in 1usize..40,
            read_size in 1usize..50,
        ) {
            prop_assert_eq!(lines(&text, capacity, read_size), std_lines(&text));
        }
    }
}
