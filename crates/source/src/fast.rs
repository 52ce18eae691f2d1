//! A hand-written parser for the common case: a well-formed page of valid
//! records (`{"Records": [...], ...}`).
//!
//! DynamoDB JSON wraps every value in a one-key object (`{"S": "x"}`), which
//! makes a general JSON deserializer do a lot of work per value. This parser
//! knows the shape and reads each byte once. It does not word errors: on
//! anything it does not expect, valid JSON or not, it gives up (`None`) and
//! the caller takes the serde path, which either succeeds or says exactly
//! what is wrong. So it must never accept what that path rejects, nor read a
//! page differently; a differential test holds it to that.
//!
//! Where no sink looks inside maps and lists ([`NestedValues::Text`]), it
//! writes each map or list attribute straight into the DynamoDB-JSON text
//! its tree would render ([`Cursor::write_tagged`]), without building the
//! tree; a second differential test holds that text to the tree's.

use std::borrow::Cow;

use dynamo_cdc_core::{
    AttributeValue, Change, Item, MAX_NESTING, NestedText, Number, Text, copy_plain, decode_base64,
    json_special_position, special_mask, write_json_string,
};

use crate::record::{
    BodyParts, ImageReading, ModifyOldImages, NestedValues, OldImage, Parts, RecordContext,
    RecordHints, convert, is_ttl_identity,
};

/// A page the fast parser read whole.
#[derive(Debug, PartialEq)]
pub(crate) struct FastPage {
    pub(crate) changes: Vec<Change>,
    /// GetRecords' `NextShardIterator`, when the page has one.
    pub(crate) next_iterator: Option<String>,
}

/// Parses a page; `None` when anything is unexpected (see the module docs).
pub(crate) fn parse_page(text: &str, ctx: &mut RecordContext) -> Option<FastPage> {
    let mut c = Cursor {
        src: text,
        b: text.as_bytes(),
        i: 0,
        entries: Vec::with_capacity(64),
        elements: Vec::with_capacity(16),
        unescaped: std::mem::take(&mut ctx.unescaped),
        reading: ctx.reading,
        names: Vec::new(),
        nested: String::new(),
        reordered: String::new(),
    };
    let page = page(&mut c, ctx);
    ctx.unescaped = c.unescaped;
    page
}

/// An item's DynamoDB JSON on its own (an old image left as text by the
/// page); `None` when anything is unexpected, as for a page.
pub(crate) fn parse_item(text: &str, unescaped: &mut Vec<u8>) -> Option<Item> {
    let mut c = Cursor {
        src: text,
        b: text.as_bytes(),
        i: 0,
        entries: Vec::new(),
        elements: Vec::new(),
        unescaped: std::mem::take(unescaped),
        reading: ImageReading::default(),
        names: Vec::new(),
        nested: String::new(),
        reordered: String::new(),
    };
    let item = c.item(1);
    c.ws();
    *unescaped = c.unescaped;
    item.filter(|_| c.i == c.b.len())
}

/// [`parse_page`] on its cursor, which holds the buffer borrowed from `ctx`.
fn page(c: &mut Cursor<'_>, ctx: &mut RecordContext) -> Option<FastPage> {
    let mut records = None;
    let mut next_iterator = None;
    c.object(|c, key| match key.as_ref() {
        "Records" => {
            if records.is_some() {
                return None; // a duplicate key: let serde decide
            }
            let mut out = Vec::with_capacity(ctx.last_page_records);
            c.array(|c| {
                let parts = c.record()?;
                out.push(convert(parts, ctx, RecordHints::default()).ok()?);
                Some(())
            })?;
            ctx.last_page_records = out.len();
            records = Some(out);
            Some(())
        }
        "NextShardIterator" => {
            if next_iterator.is_some() {
                return None;
            }
            next_iterator = Some(c.optional_string()?.map(Cow::into_owned));
            Some(())
        }
        _ => c.skip_value(),
    })?;
    c.ws();
    if c.i != c.b.len() {
        return None;
    }
    Some(FastPage {
        changes: records?,
        next_iterator: next_iterator.flatten(),
    })
}

/// A string as [`Cursor::string`] read it, appended to `out` escaped as
/// `serde_json` escapes it.
fn push_string(out: &mut String, s: Cow<'_, str>) {
    match s {
        // Borrowed only when it held no escape, so nothing that needs one.
        Cow::Borrowed(plain) => {
            out.push('"');
            out.push_str(plain);
            out.push('"');
        }
        Cow::Owned(unescaped) => write_json_string(out, &unescaped),
    }
}

/// What each two-byte escape (`\n`, `\"`, ...) stands for, by the byte
/// after the backslash; 0 for every other byte (`u` starts a longer escape).
const SHORT_ESCAPES: [u8; 256] = {
    let mut t = [0; 256];
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t[b'/' as usize] = b'/';
    t[b'b' as usize] = 0x08;
    t[b'f' as usize] = 0x0c;
    t[b'n' as usize] = b'\n';
    t[b'r' as usize] = b'\r';
    t[b't' as usize] = b'\t';
    t
};

struct Cursor<'a> {
    src: &'a str,
    b: &'a [u8],
    i: usize,
    /// Entries of the maps being read, innermost last. Each map moves its
    /// own entries out into an exactly sized vector when it ends, so a
    /// small map does not keep a growth-sized allocation.
    entries: Vec<(Text, AttributeValue)>,
    /// The same for list elements.
    elements: Vec<AttributeValue>,
    /// Where an escaped string value is unescaped before it becomes a
    /// [`Text`]: kept across pages, so that a long text (a document body
    /// near 400 KB, escaped every few dozen bytes) is not built in a new
    /// string that grows, copying itself, a dozen times.
    unescaped: Vec<u8>,
    /// Whether old images are read (see [`Cursor::body`]), and whether
    /// maps and lists are read as trees or written as text.
    reading: ImageReading,
    /// The entries of the maps being written as text, innermost last: each
    /// entry's name and where its text lies in the output (see
    /// [`Cursor::write_map`]).
    names: Vec<(Text, usize, usize)>,
    /// Where a map or list is written as text before it becomes a [`Text`].
    nested: String,
    /// Where a map's entries wait while [`Cursor::write_map`] puts them in
    /// name order.
    reordered: String,
}

impl<'a> Cursor<'a> {
    fn ws(&mut self) {
        // Pages are usually compact: one test for the common case, where
        // the next byte is already a token (every token byte is above ' ').
        while let Some(&b) = self.b.get(self.i)
            && b <= b' '
        {
            if !matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
                return;
            }
            self.i += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.i += 1)
    }

    fn literal(&mut self, lit: &[u8]) -> Option<()> {
        self.ws();
        let end = self.i + lit.len();
        (self.b.get(self.i..end)? == lit).then(|| self.i = end)
    }

    /// `null` (consumed) or not.
    fn null(&mut self) -> bool {
        self.literal(b"null").is_some()
    }

    fn boolean(&mut self) -> Option<bool> {
        match self.peek()? {
            b't' => self.literal(b"true").map(|()| true),
            b'f' => self.literal(b"false").map(|()| false),
            _ => None,
        }
    }

    /// Bytes up to the next `"` or `\\`; `None` at the end of input or at a
    /// raw control character, which JSON does not allow in strings.
    fn plain_run(&mut self) -> Option<&'a str> {
        let start = self.i;
        let rest = &self.b[start..];
        let n = json_special_position(rest)?;
        if rest[n] < 0x20 {
            return None;
        }
        self.i = start + n;
        Some(&self.src[start..self.i])
    }

    /// A JSON string, borrowed when it has no escapes.
    fn string(&mut self) -> Option<Cow<'a, str>> {
        self.eat(b'"')?;
        let first = self.plain_run()?;
        if self.b[self.i] == b'"' {
            self.i += 1;
            return Some(Cow::Borrowed(first));
        }
        let mut out = Vec::with_capacity(first.len() + 16);
        out.extend_from_slice(first.as_bytes());
        self.escaped_rest(&mut out)?;
        Some(Cow::Owned(unescaped_string(out)))
    }

    /// A JSON string as a [`Text`], unescaped (when it must be) in
    /// [`Cursor::unescaped`].
    fn text(&mut self) -> Option<Text> {
        self.eat(b'"')?;
        let first = self.plain_run()?;
        if self.b[self.i] == b'"' {
            self.i += 1;
            return Some(Text::from(first));
        }
        let mut out = std::mem::take(&mut self.unescaped);
        out.clear();
        out.extend_from_slice(first.as_bytes());
        let text = self
            .escaped_rest(&mut out)
            .map(|()| Text::from(unescaped_str(&out)));
        self.unescaped = out;
        text
    }

    /// From a backslash in a string to the end of the string, appended to
    /// `out` unescaped. What it appends is UTF-8: runs of the source (a
    /// `str`) cut only before ASCII bytes, ASCII bytes for short escapes and
    /// whole characters for `\u` escapes. (A run may be appended in pieces,
    /// one per window in [`Cursor::unescape_windows`], but its pieces meet:
    /// the run as a whole is what ends before an ASCII byte.)
    /// [`unescaped_str`] relies on it.
    fn escaped_rest(&mut self, out: &mut Vec<u8>) -> Option<()> {
        // Most escaped strings are short, with an escape or two: they go
        // from special byte to special byte. A string still going after a
        // few escapes is likely text escaped throughout (a document body),
        // which goes a window at a time, up to the last two windows of the
        // page.
        const BEFORE_WINDOWS: u32 = 4;
        let mut escapes = 0;
        loop {
            // At a special byte.
            match *self.b.get(self.i)? {
                b'"' => {
                    self.i += 1;
                    return Some(());
                }
                b'\\' => self.escape(out)?,
                _ => return None, // a raw control character
            }
            escapes += 1;
            if escapes == BEFORE_WINDOWS && self.unescape_windows(out)? {
                return Some(());
            }
            self.i += copy_plain(&self.b[self.i..], out);
        }
    }

    /// Unescapes the string from `self.i` on, a 64-byte window at a time
    /// while the page holds two more windows: `Some(true)` at the string's
    /// end (its quote read), `Some(false)` where too little of the page is
    /// left to go on this way (`self.i` then anywhere in the string).
    ///
    /// Text escaped every few dozen bytes (a document body, a JSON string
    /// inside a string) made a scan that stops at each special byte
    /// mispredict its exit at each one: a tenth of a replay of such items.
    /// Here the window's special bytes are found at once ([`special_mask`])
    /// and walked bit by bit; each stretch of plain bytes is copied 64 bytes
    /// at once, without looking for its end, and the next stretch or escape
    /// is written over what went past it.
    fn unescape_windows(&mut self, out: &mut Vec<u8>) -> Option<bool> {
        const WINDOW: usize = 64;
        let b = self.b;
        // `out[..d]` is what has been unescaped; past it, room to write.
        let mut d = out.len();
        // Two windows: one to look at, and bytes to copy a whole window's
        // worth from anywhere in it.
        while self.i + 2 * WINDOW <= b.len() {
            let base = self.i;
            // Never `None` (the loop's condition), nor are the chunks below
            // (within the page, and within the room made for the window).
            let window = b[base..].first_chunk::<WINDOW>()?;
            let specials = special_mask(window);
            // A window writes at most 64 bytes from anywhere in its first
            // 64. Room for several windows is made at once: a call to fill
            // it for each window cost more than the window's copies.
            if out.len() < d + 2 * WINDOW {
                out.resize(d + 8 * WINDOW, 0);
            }
            out[d..d + WINDOW].copy_from_slice(window);
            // The window's bytes from `at` on are plain up to the next
            // special byte, and already written from `d` on.
            let mut at = 0;
            loop {
                let ahead = specials & (u64::MAX << at);
                if ahead == 0 {
                    d += WINDOW - at;
                    self.i = base + WINDOW;
                    break;
                }
                let special = ahead.trailing_zeros() as usize;
                d += special - at;
                match window[special] {
                    b'"' => {
                        out.truncate(d);
                        self.i = base + special + 1;
                        return Some(true);
                    }
                    b'\\' => {}
                    _ => return None, // a raw control character
                }
                self.i = base + special;
                d += self.unescape_one(out[d..].first_chunk_mut()?)?;
                at = self.i - base;
                if at >= WINDOW {
                    self.i = base + at; // the escape ran past the window
                    break;
                }
                out[d..d + WINDOW].copy_from_slice(b[base + at..].first_chunk::<WINDOW>()?);
            }
        }
        out.truncate(d);
        Some(false)
    }

    /// The escape at a backslash, appended to `out` unescaped.
    fn escape(&mut self, out: &mut Vec<u8>) -> Option<()> {
        let mut slot = [0; 4];
        let n = self.unescape_one(&mut slot)?;
        // All four bytes, then cut back: a copy of fixed length, where one
        // of `n` bytes branches on `n`.
        let len = out.len();
        out.extend_from_slice(&slot);
        out.truncate(len + n);
        Some(())
    }

    /// The escape at a backslash, written unescaped to the front of `slot`:
    /// how many bytes it takes there.
    #[inline]
    fn unescape_one(&mut self, slot: &mut [u8; 4]) -> Option<usize> {
        let esc = *self.b.get(self.i + 1)?;
        self.i += 2;
        // A table rather than a `match`: escapes in text alternate
        // (`\n`, `\"`, ...), and a jump on the escape byte mispredicts
        // where a test for "one of the two-byte escapes" does not.
        match SHORT_ESCAPES[usize::from(esc)] {
            0 if esc == b'u' => Some(self.unicode_escape()?.encode_utf8(slot).len()),
            0 => None,
            byte => {
                slot[0] = byte;
                Some(1)
            }
        }
    }

    /// The rest of `\uXXXX` (and its low surrogate, for a pair).
    fn unicode_escape(&mut self) -> Option<char> {
        let high = self.hex4()?;
        if (0xDC00..0xE000).contains(&high) {
            return None; // a lone low surrogate
        }
        if (0xD800..0xDC00).contains(&high) {
            if self.b.get(self.i..self.i + 2)? != b"\\u" {
                return None;
            }
            self.i += 2;
            let low = self.hex4()?;
            if !(0xDC00..0xE000).contains(&low) {
                return None;
            }
            return char::from_u32(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00));
        }
        char::from_u32(high)
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = self.b.get(self.i..self.i + 4)?;
        let mut v = 0;
        for &d in digits {
            v = v * 16 + (d as char).to_digit(16)?;
        }
        self.i += 4;
        Some(v)
    }

    /// A JSON number's text.
    fn number(&mut self) -> Option<&'a str> {
        self.ws();
        let start = self.i;
        if self.b.get(self.i) == Some(&b'-') {
            self.i += 1;
        }
        match *self.b.get(self.i)? {
            b'0' => self.i += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            let at = self.i;
            self.digits();
            if self.i == at {
                return None;
            }
        }
        if let Some(b'e' | b'E') = self.b.get(self.i) {
            self.i += 1;
            if let Some(b'+' | b'-') = self.b.get(self.i) {
                self.i += 1;
            }
            let at = self.i;
            self.digits();
            if self.i == at {
                return None;
            }
        }
        Some(&self.src[start..self.i])
    }

    fn digits(&mut self) {
        while self.b.get(self.i).is_some_and(u8::is_ascii_digit) {
            self.i += 1;
        }
    }

    /// `{ "key": value, ... }`, calling `field` with the cursor on each value.
    fn object(
        &mut self,
        mut field: impl FnMut(&mut Self, Cow<'a, str>) -> Option<()>,
    ) -> Option<()> {
        self.eat(b'{')?;
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(());
        }
        loop {
            let key = self.string()?;
            self.eat(b':')?;
            field(self, key)?;
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// `[ value, ... ]`, calling `item` with the cursor on each value.
    fn array(&mut self, mut item: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.eat(b'[')?;
        if self.peek()? == b']' {
            self.i += 1;
            return Some(());
        }
        loop {
            item(self)?;
            match self.peek()? {
                b',' => self.i += 1,
                b']' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// Any JSON value, unread. Nesting is bounded like serde_json's (128).
    fn skip_value(&mut self) -> Option<()> {
        self.skip_nested(0)
    }

    fn skip_nested(&mut self, depth: usize) -> Option<()> {
        if depth > 128 {
            return None;
        }
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' => self.object(|c, _| c.skip_nested(depth + 1)),
            b'[' => self.array(|c| c.skip_nested(depth + 1)),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => self.number().map(drop),
        }
    }

    /// A JSON string, unread; escapes are checked as [`Cursor::text`]
    /// checks them.
    fn skip_string(&mut self) -> Option<()> {
        self.eat(b'"')?;
        loop {
            self.plain_run()?;
            if self.b[self.i] == b'"' {
                self.i += 1;
                return Some(());
            }
            // At a backslash.
            let esc = *self.b.get(self.i + 1)?;
            self.i += 2;
            if SHORT_ESCAPES[usize::from(esc)] == 0 {
                if esc != b'u' {
                    return None;
                }
                self.unicode_escape()?;
            }
        }
    }

    /// An item in DynamoDB JSON, as [`Cursor::item`] reads one, checked
    /// and passed over without building anything. `None` on anything
    /// else, valid JSON or not: the caller then skips it as plain JSON.
    fn skip_item(&mut self, depth: usize) -> Option<()> {
        self.object(|c, _| c.skip_typed(depth))
    }

    /// One typed value, `{"T": ...}`, as [`Cursor::skip_item`] passes it.
    fn skip_typed(&mut self, depth: usize) -> Option<()> {
        self.eat(b'{')?;
        match self.tag()? {
            "S" | "N" | "B" => self.skip_string()?,
            "BOOL" => {
                self.boolean()?;
            }
            "NULL" => self.literal(b"true")?,
            "SS" | "NS" | "BS" => self.array(Self::skip_string)?,
            "L" | "M" if depth > MAX_NESTING => return None,
            "L" => self.array(|c| c.skip_typed(depth + 1))?,
            "M" => self.skip_item(depth + 1)?,
            _ => return None,
        }
        self.eat(b'}')
    }

    /// The text of the next value (a number or a string), unread.
    fn raw_scalar(&mut self) -> Option<&'a str> {
        self.ws();
        let start = self.i;
        match self.peek()? {
            b'"' => {
                self.string()?;
            }
            _ => {
                self.number()?;
            }
        }
        Some(&self.src[start..self.i])
    }

    fn optional_string(&mut self) -> Option<Option<Cow<'a, str>>> {
        if self.null() {
            Some(None)
        } else {
            self.string().map(Some)
        }
    }

    fn record(&mut self) -> Option<Parts<'a>> {
        let mut parts = Parts {
            event_id: None,
            event_name: None,
            event_source_arn: None,
            ttl_delete: false,
            body: None,
        };
        let mut seen = [false; 5];
        self.object(|c, key| {
            let slot = match key.as_ref() {
                "eventID" => 0,
                "eventName" => 1,
                "eventSourceARN" => 2,
                "userIdentity" => 3,
                "dynamodb" => 4,
                _ => return c.skip_value(),
            };
            if std::mem::replace(&mut seen[slot], true) {
                return None;
            }
            match slot {
                0 => parts.event_id = c.optional_string()?.map(Cow::into_owned),
                1 => parts.event_name = c.optional_string()?,
                2 => parts.event_source_arn = c.optional_string()?,
                3 => parts.ttl_delete = c.user_identity()?,
                _ => {
                    // Records name the event before the body, as AWS writes
                    // them: an old image no sink reads is then only skipped.
                    let read_old = c.reading.modify_old_images == ModifyOldImages::Read
                        || parts.event_name.as_deref() == Some("REMOVE");
                    parts.body = if c.null() {
                        None
                    } else {
                        Some(c.body(read_old)?)
                    };
                }
            }
            Some(())
        })?;
        Some(parts)
    }

    /// True for DynamoDB's TTL process.
    fn user_identity(&mut self) -> Option<bool> {
        if self.null() {
            return Some(false);
        }
        let (mut kind, mut principal) = (None, None);
        // GetRecords says `Type`/`PrincipalId`, Lambda events `type`/`principalId`.
        self.object(|c, key| match key.as_ref() {
            "type" | "Type" if kind.is_none() => {
                kind = Some(c.optional_string()?);
                Some(())
            }
            "principalId" | "PrincipalId" if principal.is_none() => {
                principal = Some(c.optional_string()?);
                Some(())
            }
            "type" | "Type" | "principalId" | "PrincipalId" => None,
            _ => c.skip_value(),
        })?;
        Some(is_ttl_identity(
            kind.flatten().as_deref(),
            principal.flatten().as_deref(),
        ))
    }

    /// The `dynamodb` object. Its old image is read when `read_old`, or
    /// else checked as JSON and left as text for [`convert`] to read if the
    /// record turns out to be a REMOVE (or no sink leaves it unread).
    fn body(&mut self, read_old: bool) -> Option<BodyParts<'a>> {
        let mut body = BodyParts {
            approx_creation: None,
            keys: None,
            new_image: None,
            old_image: None,
            sequence_number: None,
        };
        let mut seen = [false; 5];
        self.object(|c, key| {
            let slot = match key.as_ref() {
                "ApproximateCreationDateTime" => 0,
                "Keys" => 1,
                "NewImage" => 2,
                "OldImage" => 3,
                "SequenceNumber" => 4,
                _ => return c.skip_value(),
            };
            if std::mem::replace(&mut seen[slot], true) {
                return None;
            }
            if c.null() {
                return Some(());
            }
            match slot {
                0 => body.approx_creation = Some(c.raw_scalar()?),
                1 => body.keys = Some(c.item(1)?),
                2 => body.new_image = Some(c.item(1)?),
                3 if read_old => body.old_image = Some(OldImage::Read(c.item(1)?)),
                3 => {
                    c.ws();
                    let start = c.i;
                    if c.skip_item(1).is_none() {
                        // Not the usual shape: whatever JSON it is, as JSON.
                        c.i = start;
                        c.skip_value()?;
                    }
                    body.old_image = Some(OldImage::Text(&c.src[start..c.i]));
                }
                _ => body.sequence_number = Some(c.string()?),
            }
            Some(())
        })?;
        Some(body)
    }

    /// An item or map whose values sit at `depth`.
    fn item(&mut self, depth: usize) -> Option<Item> {
        let start = self.entries.len();
        // Names usually come sorted: each is compared with the one before
        // it while both are at hand, and the item needs no other check.
        let mut ascending = true;
        self.object(|c, key| {
            let value = c.value(depth)?;
            let name = Text::from(&*key);
            // A nested map has taken its own entries out again by now.
            if let Some((last, _)) = c.entries[start..].last() {
                ascending &= *last < name;
            }
            c.entries.push((name, value));
            Some(())
        })?;
        // `split_off` moves the entries with one copy into an exactly
        // sized vector (collecting a `drain` moved them one by one).
        let entries = self.entries.split_off(start);
        if ascending {
            Some(Item::from_ascending_entries(entries))
        } else {
            // Sorted there; a duplicate name is for the serde path to report.
            Item::from_entries(entries).ok()
        }
    }

    /// A set's strings, each made into an element by `element` as it is
    /// read (no vector of the strings on the way).
    fn set<T>(&mut self, mut element: impl FnMut(Cow<'a, str>) -> Option<T>) -> Option<Vec<T>> {
        let mut out = Vec::with_capacity(4);
        self.array(|c| {
            out.push(element(c.string()?)?);
            Some(())
        })?;
        Some(out)
    }

    /// A type tag and its colon; escaped tags go to the serde path.
    fn tag(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.i;
        let len = self.b[start..].iter().take(5).position(|&b| b == b'"')?;
        self.i = start + len + 1;
        self.eat(b':')?;
        Some(&self.src[start..start + len])
    }

    /// One typed value, `{"T": ...}`.
    fn value(&mut self, depth: usize) -> Option<AttributeValue> {
        self.ws();
        let start = self.i;
        if self.b.get(start) != Some(&b'{') {
            return None;
        }
        self.i += 1;
        let tag = self.tag()?;
        if matches!(tag, "M" | "L")
            && self.reading.nested_values == NestedValues::Text
            && depth <= MAX_NESTING
        {
            return self.nested(tag, depth, start);
        }
        let value = self.typed(tag, depth)?;
        self.eat(b'}')?;
        Some(value)
    }

    /// A map or list (its tag read; its `{` at `start`) as its canonical
    /// text: taken as it is when it is canonical already (see
    /// [`crate::canonical`]), written out as it is read otherwise.
    // Kept out of `value`, which runs for every value of a page: maps and
    // lists are a few of them.
    #[inline(never)]
    fn nested(&mut self, tag: &str, depth: usize, start: usize) -> Option<AttributeValue> {
        let text = match crate::canonical::typed_end(self.src, start, depth) {
            Some(end) => {
                self.i = end;
                Text::from(&self.src[start..end])
            }
            None => {
                let mut out = std::mem::take(&mut self.nested);
                out.clear();
                let written = self
                    .write_tagged(tag, depth, &mut out)
                    .and_then(|()| self.eat(b'}'));
                let text = Text::from(out.as_str());
                self.nested = out;
                written?;
                text
            }
        };
        Some(AttributeValue::Nested(NestedText::from_canonical(text)))
    }

    /// The value after its tag, `...` of `{"T": ...}`.
    // Inlined: on its own it cost every value a call and a copy of its
    // result (about 1% of the instructions of a replay of small records).
    #[inline(always)]
    fn typed(&mut self, tag: &str, depth: usize) -> Option<AttributeValue> {
        Some(match tag {
            "S" => AttributeValue::S(self.text()?),
            "N" => AttributeValue::N(Number::parse(&self.string()?).ok()?),
            "B" => AttributeValue::B(decode_base64(self.string()?.as_bytes())?),
            "BOOL" => AttributeValue::Bool(self.boolean()?),
            "NULL" => {
                self.literal(b"true")?;
                AttributeValue::Null
            }
            "SS" => AttributeValue::string_set(self.set(|t| Some(t.into_owned()))?).ok()?,
            "NS" => AttributeValue::number_set(self.set(|t| Number::parse(&t).ok())?).ok()?,
            "BS" => AttributeValue::binary_set(self.set(|t| decode_base64(t.as_bytes()))?).ok()?,
            "L" | "M" if depth > MAX_NESTING => return None,
            "L" => {
                let start = self.elements.len();
                self.array(|c| {
                    let value = c.value(depth + 1)?;
                    c.elements.push(value);
                    Some(())
                })?;
                AttributeValue::L(self.elements.split_off(start))
            }
            "M" => AttributeValue::M(self.item(depth + 1)?),
            _ => return None,
        })
    }

    /// One typed value, `{"T": ...}`, appended to `out` as
    /// [`AttributeValue::write_ddb_json`] writes the value
    /// [`Cursor::value`] reads: what it accepts and rejects is the same.
    fn write_value(&mut self, depth: usize, out: &mut String) -> Option<()> {
        self.eat(b'{')?;
        let tag = self.tag()?;
        self.write_tagged(tag, depth, out)?;
        self.eat(b'}')
    }

    /// The value after its tag, appended to `out` whole (`{"T":...}`).
    /// Strings, numbers, booleans, nulls, maps and lists are written as
    /// they are read; binaries and sets, rarer inside maps, are read as
    /// values (which checks and sorts them) and then written.
    fn write_tagged(&mut self, tag: &str, depth: usize, out: &mut String) -> Option<()> {
        match tag {
            "S" => {
                out.push_str("{\"S\":");
                push_string(out, self.string()?);
            }
            "N" => {
                let n = Number::parse(&self.string()?).ok()?;
                out.push_str("{\"N\":\"");
                out.push_str(n.as_str());
                out.push('"');
            }
            "BOOL" => out.push_str(if self.boolean()? {
                "{\"BOOL\":true"
            } else {
                "{\"BOOL\":false"
            }),
            "NULL" => {
                self.literal(b"true")?;
                out.push_str("{\"NULL\":true");
            }
            "L" | "M" if depth > MAX_NESTING => return None,
            "L" => {
                out.push_str("{\"L\":[");
                let mut first = true;
                self.array(|c| {
                    if !std::mem::take(&mut first) {
                        out.push(',');
                    }
                    c.write_value(depth + 1, out)
                })?;
                out.push(']');
            }
            "M" => {
                out.push_str("{\"M\":");
                self.write_map(depth + 1, out)?;
            }
            "B" | "SS" | "NS" | "BS" => {
                self.typed(tag, depth)?.write_ddb_json(out);
                return Some(());
            }
            _ => return None,
        }
        out.push('}');
        Some(())
    }

    /// A map whose values sit at `depth`, appended to `out` as `{...}` with
    /// its entries in name order, as an [`Item`] keeps them. Names usually
    /// come sorted, and each is written where it is read; when one does
    /// not, the entries are put in order at the end. A name twice is for
    /// the serde path to report, as in [`Cursor::item`].
    fn write_map(&mut self, depth: usize, out: &mut String) -> Option<()> {
        out.push('{');
        let open = out.len();
        let first = self.names.len();
        let mut ascending = true;
        self.object(|c, key| {
            let name = Text::from(&*key);
            // A nested map has taken its own entries out again by now.
            if let Some((last, ..)) = c.names[first..].last() {
                ascending &= *last < name;
                out.push(',');
            }
            let start = out.len();
            push_string(out, key);
            out.push(':');
            c.write_value(depth, out)?;
            c.names.push((name, start, out.len()));
            Some(())
        })?;
        if !ascending {
            let entries = &mut self.names[first..];
            entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            if entries.windows(2).any(|w| w[0].0 == w[1].0) {
                return None;
            }
            // The entries as written, then back in name order.
            let mut written = std::mem::take(&mut self.reordered);
            written.clear();
            written.push_str(&out[open..]);
            out.truncate(open);
            for (i, (_, start, end)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&written[start - open..end - open]);
            }
            self.reordered = written;
        }
        self.names.truncate(first);
        out.push('}');
        Some(())
    }
}

/// An unescaped string's bytes as the `str` they are.
///
/// Checking them again was about 2% of a replay of items near 400 KB with
/// escaped bodies, whose page had been checked as a whole already. The
/// bytes are what [`Cursor::escaped_rest`] appended after a run of the
/// source cut before an ASCII byte: whole runs of valid UTF-8 and whole
/// characters. Debug builds, which the differential tests run, check it
/// anyway.
fn unescaped_str(bytes: &[u8]) -> &str {
    debug_assert!(std::str::from_utf8(bytes).is_ok());
    // SAFETY: valid UTF-8, as argued above.
    #[allow(unsafe_code)]
    unsafe {
        std::str::from_utf8_unchecked(bytes)
    }
}

/// [`unescaped_str`] for bytes the string will own.
fn unescaped_string(bytes: Vec<u8>) -> String {
    debug_assert!(std::str::from_utf8(&bytes).is_ok());
    // SAFETY: as for `unescaped_str`.
    #[allow(unsafe_code)]
    unsafe {
        String::from_utf8_unchecked(bytes)
    }
}

#[cfg(test)]
mod tests {
    use dynamo_cdc_core::{AttributeValue, Item};
    use dynamo_cdc_testkit::strategies::{arb_item, get_records_json, stream_record_json};
    use proptest::prelude::*;

    use super::FastPage;
    use crate::record::{
        ImageReading, ModifyOldImages, NestedValues, RecordContext, parse_page_serde,
    };

    fn ctx() -> RecordContext {
        RecordContext::new("shard-1".into(), Some("fallback".into()))
    }

    /// A context that reads images as `reading` says.
    fn ctx_reading(reading: ImageReading) -> RecordContext {
        let mut ctx = ctx();
        ctx.reading = reading;
        ctx
    }

    /// Every way of reading images.
    const EVERY: [ImageReading; 4] = {
        use ModifyOldImages::{KeepUnread, Read};
        use NestedValues::{Text, Trees};
        const fn r(
            modify_old_images: ModifyOldImages,
            nested_values: NestedValues,
        ) -> ImageReading {
            ImageReading {
                modify_old_images,
                nested_values,
            }
        }
        [
            r(Read, Trees),
            r(KeepUnread, Trees),
            r(Read, Text),
            r(KeepUnread, Text),
        ]
    };

    /// Read as text, every map and list of an image is a [`NestedText`]
    /// whose text is its tree's (which the serde path read); read as
    /// trees, none is. The pages must otherwise agree (values compare
    /// equal in either form).
    fn nested_as_read(fast: &FastPage, reference: &FastPage, reading: ImageReading) {
        let images = |page: &FastPage| -> Vec<Item> {
            page.changes
                .iter()
                .flat_map(|c| [c.old_image.clone(), c.new_image.clone()])
                .flatten()
                .collect()
        };
        for (fast, tree) in images(fast).iter().zip(&images(reference)) {
            for ((name, value), (_, expected)) in fast.iter().zip(tree.iter()) {
                match (reading.nested_values, value) {
                    (NestedValues::Text, AttributeValue::Nested(text)) => {
                        assert_eq!(text.as_str(), expected.to_ddb_json(), "{name}");
                    }
                    (NestedValues::Text, AttributeValue::M(_) | AttributeValue::L(_)) => {
                        panic!("{name}: a tree where text was asked for")
                    }
                    (NestedValues::Trees, AttributeValue::Nested(_)) => {
                        panic!("{name}: text where a tree was asked for")
                    }
                    _ => {}
                }
            }
        }
    }

    /// What `Cursor::item` relies on: a map's entries leave the cursor's
    /// growth-sized buffer in a vector of their own size, even from the
    /// start of the buffer, and the buffer stays for the next map.
    #[test]
    fn split_off_hands_over_an_exactly_sized_vector() {
        for start in [0, 2] {
            let mut buffer: Vec<u32> = Vec::with_capacity(64);
            buffer.extend([1, 2, 3, 4, 5]);
            let own = buffer.split_off(start);
            assert_eq!(own.capacity(), 5 - start);
            assert_eq!(buffer.capacity(), 64);
            assert_eq!(buffer.len(), start);
        }
    }

    fn page(items: &[Item]) -> String {
        let records: Vec<String> = items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let keys: Item = [("pk", AttributeValue::S(format!("k{i}").into()))].into();
                let op = ["INSERT", "MODIFY", "REMOVE"][i % 3];
                let (old, new) = match op {
                    "INSERT" => (None, Some(item)),
                    "MODIFY" => (Some(item), Some(item)),
                    _ => (Some(item), None),
                };
                stream_record_json("things", 1_000 + i as u128, op, &keys, old, new, i % 2 == 0)
            })
            .collect();
        get_records_json(&records, Some("next"))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// On valid pages both parsers read the same changes, whether
        /// MODIFY old images are read or left as text.
        #[test]
        fn agrees_with_serde_on_valid_pages(items in proptest::collection::vec(arb_item(), 0..6)) {
            let text = page(&items);
            for reading in EVERY {
                let fast = super::parse_page(&text, &mut ctx_reading(reading));
                let reference = parse_page_serde(&text, &mut ctx_reading(reading));
                prop_assert!(fast.is_some(), "the fast parser gave up on a valid page");
                nested_as_read(fast.as_ref().unwrap(), reference.as_ref().unwrap(), reading);
                prop_assert_eq!(fast, reference);
            }
        }

        /// On damaged pages the fast parser either gives up or agrees: it never
        /// accepts what the reference rejects, nor reads it differently.
        #[test]
        fn never_accepts_what_serde_rejects(
            items in proptest::collection::vec(arb_item(), 1..4),
            cut in any::<proptest::sample::Index>(),
            byte in any::<u8>(),
            mode in 0..3u8,
        ) {
            let mut bytes = page(&items).into_bytes();
            let at = cut.index(bytes.len());
            match mode {
                0 => bytes.truncate(at),
                1 => bytes[at] = byte,
                _ => bytes.insert(at, byte),
            }
            let Ok(text) = String::from_utf8(bytes) else { return Ok(()) };
            for reading in EVERY {
                if let Some(fast) = super::parse_page(&text, &mut ctx_reading(reading)) {
                    prop_assert_eq!(Some(fast), parse_page_serde(&text, &mut ctx_reading(reading)));
                }
            }
        }
    }

    /// Streams send an item's names in any order: the fast parser reads
    /// them as serde does (an item is sorted either way), in order or not,
    /// at the top and nested; a name twice is for serde to report.
    #[test]
    fn names_in_any_order_and_a_name_twice() {
        let page = |image: &str| {
            format!(
                r#"{{"Records":[{{"eventName":"INSERT","dynamodb":{{"Keys":{{"k":{{"S":"a"}}}},"NewImage":{image},"SequenceNumber":"1"}}}}]}}"#
            )
        };
        let nested = r#"{"y":{"S":"2"},"b":{"BOOL":true},"x":{"NULL":true}}"#;
        for image in [
            format!(r#"{{"z":{{"N":"1"}},"k":{{"S":"a"}},"m":{{"M":{nested}}},"a":{{"S":"3"}}}}"#),
            format!(r#"{{"a":{{"S":"3"}},"k":{{"S":"a"}},"m":{{"M":{nested}}},"z":{{"N":"1"}}}}"#),
            format!(r#"{{"a":{{"S":"3"}},"k":{{"S":"a"}},"z":{{"N":"1"}},"m":{{"M":{nested}}}}}"#),
            r#"{"a a long name past the inline limit":{"S":"3"},"a":{"S":"1"}}"#.to_owned(),
            // Nested deeper, and in a list.
            format!(
                r#"{{"k":{{"S":"a"}},"l":{{"L":[{{"M":{{"q":{{"M":{nested}}},"p":{{"L":[]}}}}}},{{"M":{{}}}}]}}}}"#
            ),
        ] {
            let text = page(&image);
            for reading in EVERY {
                let fast = super::parse_page(&text, &mut ctx_reading(reading));
                let reference = parse_page_serde(&text, &mut ctx_reading(reading));
                assert!(fast.is_some(), "{image}");
                nested_as_read(fast.as_ref().unwrap(), reference.as_ref().unwrap(), reading);
                assert_eq!(fast, reference, "{image}");
            }
        }
        let image = page(&format!(r#"{{"a":{{"S":"3"}},"m":{{"M":{nested}}}}}"#));
        let new_image = super::parse_page(&image, &mut ctx()).unwrap().changes[0]
            .new_image
            .clone()
            .unwrap();
        let Some(AttributeValue::M(m)) = new_image.get("m") else {
            panic!("no map");
        };
        let names: Vec<&str> = m.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["b", "x", "y"]);
        for twice in [
            r#"{"k":{"S":"a"},"k":{"S":"b"}}"#.to_owned(),
            r#"{"z":{"S":"a"},"k":{"S":"b"},"z":{"S":"c"}}"#.to_owned(),
            r#"{"m":{"M":{"y":{"S":"2"},"b":{"S":"1"},"y":{"S":"3"}}}}"#.to_owned(),
        ] {
            let text = page(&twice);
            for reading in EVERY {
                assert_eq!(
                    super::parse_page(&text, &mut ctx_reading(reading)),
                    None,
                    "{twice}"
                );
                assert_eq!(
                    parse_page_serde(&text, &mut ctx_reading(reading)),
                    None,
                    "{twice}"
                );
            }
        }
    }

    /// Unread, a MODIFY's old image is its text as sent, checked only as
    /// JSON; a REMOVE's is read either way (it is the row a delete shows),
    /// also when the record names its event after the body.
    #[test]
    fn a_modify_old_image_no_sink_reads_stays_text() {
        let old = r#"{ "k":{"S":"a"}, "n":{"N":"not a number"} }"#;
        let record = |event: &str, old: &str| {
            format!(
                r#"{{"eventName":"{event}","dynamodb":{{"Keys":{{"k":{{"S":"a"}}}},"OldImage":{old},"SequenceNumber":"1"}}}}"#
            )
        };
        let unread = ctx_reading(EVERY[1]);
        // DynamoDB JSON with a value no item holds, and JSON of another
        // shape, which is passed over as plain JSON.
        let other = r#"{"k":{"S":"a"},"n":{"N":5},"x":[1,{"\u0041":null}]}"#;
        for old in [old, other] {
            let text = format!(r#"{{"Records":[{}]}}"#, record("MODIFY", old));
            let change = &super::parse_page(&text, &mut unread.clone())
                .unwrap()
                .changes[0];
            assert_eq!(change.old_image, None);
            assert_eq!(change.unread_old_image.as_deref(), Some(old));
            assert_eq!(
                parse_page_serde(&text, &mut unread.clone())
                    .unwrap()
                    .changes[0],
                *change
            );
        }
        let text = format!(r#"{{"Records":[{}]}}"#, record("MODIFY", old));
        // Read, the same image is a bad record, for serde to word.
        assert_eq!(super::parse_page(&text, &mut ctx()), None);
        assert_eq!(parse_page_serde(&text, &mut ctx()), None);

        let good = r#"{"k":{"S":"a"},"m":{"M":{"s":{"S":"q\n"}}}}"#;
        let after_body = format!(
            r#"{{"Records":[{{"dynamodb":{{"Keys":{{"k":{{"S":"a"}}}},"OldImage":{good},"SequenceNumber":"1"}},"eventName":"REMOVE"}}]}}"#
        );
        for text in [
            format!(r#"{{"Records":[{}]}}"#, record("REMOVE", good)),
            after_body,
        ] {
            let read = super::parse_page(&text, &mut ctx()).unwrap();
            let left = super::parse_page(&text, &mut unread.clone()).unwrap();
            assert!(read.changes[0].old_image.is_some(), "{text}");
            assert_eq!(left, read, "{text}");
            assert_eq!(Some(left), parse_page_serde(&text, &mut unread.clone()));
        }
        let bad_remove = format!(r#"{{"Records":[{}]}}"#, record("REMOVE", old));
        assert_eq!(super::parse_page(&bad_remove, &mut unread.clone()), None);
        assert_eq!(parse_page_serde(&bad_remove, &mut unread.clone()), None);
    }

    #[test]
    fn escapes_and_unicode() {
        let text = r#"{"Records":[{"eventID":"e\u00e9","eventName":"INSERT","dynamodb":{"ApproximateCreationDateTime":1.5e9,"Keys":{"k":{"S":"a"}},"NewImage":{"k":{"S":"a"},"s":{"S":"q\"\\\/\b\f\n\r\t\ud83d\ude00 \u0000"}},"SequenceNumber":"1"}}]}"#;
        let fast = super::parse_page(text, &mut ctx()).unwrap();
        assert_eq!(fast.changes[0].source.event_id, "eé");
        assert_eq!(Some(fast), parse_page_serde(text, &mut ctx()));
        // Inside a map written as text, every escape is written back as
        // serde_json writes it (`\/` as `/`, `\u0000` as `\u0000`, the
        // emoji as itself), names included.
        let in_map = text
            .replace(r#""s":{"S":"#, r#""m":{"M":{"n\u00e9\n":{"S":"#)
            .replace(r#"\u0000"}}"#, r#"\u0000"}}}}"#);
        let mut reading = ctx_reading(EVERY[3]);
        let fast = super::parse_page(&in_map, &mut reading).unwrap();
        let image = fast.changes[0].new_image.as_ref().unwrap();
        let Some(AttributeValue::Nested(m)) = image.get("m") else {
            panic!("no map as text in {in_map}");
        };
        assert_eq!(
            m.as_str(),
            r#"{"M":{"né\n":{"S":"q\"\\/\b\f\n\r\t😀 \u0000"}}}"#
        );
        assert_eq!(Some(fast), parse_page_serde(&in_map, &mut ctx()));
        for bad in [r#"\ud83d""#, r#"\ude00""#, r#"\x""#] {
            let t = text.replace(r#"\u0000""#, bad);
            assert!(super::parse_page(&t, &mut ctx()).is_none(), "{bad}");
        }
    }

    proptest! {
        /// Any text, escaped as any writer may escape it (each character
        /// as itself where JSON allows, as its short escape, or as `\u`
        /// escapes, surrogate pairs for those beyond the first plane),
        /// reads back as that text: the unescaped bytes are the text's
        /// UTF-8, which `unescaped_str` takes without checking again.
        #[test]
        fn unescapes_any_text_however_it_was_escaped(
            text in prop_oneof![any::<String>(), escape_heavy_text()],
            forms in proptest::collection::vec(0..3u8, 64),
        ) {
            let mut escaped = String::new();
            for (i, c) in text.chars().enumerate() {
                let short = match c {
                    '"' => Some("\\\""),
                    '\\' => Some("\\\\"),
                    '\n' => Some("\\n"),
                    '\t' => Some("\\t"),
                    _ => None,
                };
                match (forms[i % forms.len()], short) {
                    (0, _) if c >= ' ' && c != '"' && c != '\\' => escaped.push(c),
                    (1, Some(short)) => escaped.push_str(short),
                    _ => {
                        for unit in c.encode_utf16(&mut [0; 2]) {
                            escaped.push_str(&format!("\\u{unit:04x}"));
                        }
                    }
                }
            }
            let item = format!(r#"{{"s":{{"S":"{escaped}"}},"{escaped}":{{"NULL":true}}}}"#);
            let read = super::parse_item(&item, &mut Vec::new());
            let expected = Item::from_entries(vec![
                ("s".into(), AttributeValue::S(text.as_str().into())),
                (text.as_str().into(), AttributeValue::Null),
            ]);
            match expected {
                Ok(expected) => prop_assert_eq!(read, Some(expected)),
                // The text is "s" itself: a name twice.
                Err(_) => prop_assert_eq!(read, None),
            }
        }
    }

    /// Text of a few hundred characters, about a third of them ones JSON
    /// escapes, others of two to four bytes: strings that span several of
    /// the unescaper's windows, with escapes and characters across their
    /// edges.
    fn escape_heavy_text() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                6 => proptest::char::range('a', 'z'),
                1 => Just('"'),
                1 => Just('\\'),
                1 => Just('\n'),
                1 => Just('\t'),
                1 => Just('é'),
                1 => Just('€'),
                1 => Just('😀'),
            ],
            0..400,
        )
        .prop_map(|chars| chars.into_iter().collect())
    }

    /// An escape or a character of several bytes at every offset around
    /// the unescaper's 64-byte windows, in strings that end there or run
    /// on, near the end of the page (where the windows are not used) or far
    /// from it.
    #[test]
    fn unescapes_across_window_edges() {
        let pieces = [
            (r#"\""#, "\""),
            (r"\\", "\\"),
            (r"\n", "\n"),
            (r"\u00e9", "é"),
            (r"\ud83d\ude00", "😀"),
            ("é", "é"),
            ("😀", "😀"),
        ];
        for lead in 0..140 {
            for (written, read) in pieces {
                for tail in [0, 1, 62, 63, 64, 65, 130] {
                    let (x, y) = ("x".repeat(lead), "y".repeat(tail));
                    // Four escapes first: the unescaper goes by windows
                    // from the fourth on, so `lead` is the piece's offset
                    // in the first window.
                    let escaped = format!(r#"\n\t\"\\{x}{written}{y}"#);
                    let text = format!("\n\t\"\\{x}{read}{y}");
                    for pad in [0, 200] {
                        // The page's end follows the string, or a long
                        // attribute does.
                        let item = format!(
                            r#"{{"s":{{"S":"{escaped}"}},"z":{{"S":"{}"}}}}"#,
                            "z".repeat(pad)
                        );
                        let want = Item::from_entries(vec![
                            ("s".into(), AttributeValue::S(text.as_str().into())),
                            (
                                "z".into(),
                                AttributeValue::S("z".repeat(pad).as_str().into()),
                            ),
                        ])
                        .unwrap();
                        assert_eq!(
                            super::parse_item(&item, &mut Vec::new()),
                            Some(want),
                            "{item}"
                        );
                    }
                }
            }
        }
    }

    /// What is not a JSON string is refused inside a window as it is
    /// before one: bad escapes, bad or broken surrogates and raw control
    /// bytes, at every offset around the first window's edge.
    #[test]
    fn refuses_bad_escapes_across_window_edges() {
        let bad = [
            r"\x",
            r"\u12G4",
            r"\ud83d",
            r"\ud83dx",
            r"\ud83d\u0041",
            r"\ude00",
            "\u{1}",
            "\n",
        ];
        for lead in 56..72 {
            for piece in bad {
                let x = "x".repeat(lead);
                let item = format!(
                    r#"{{"s":{{"S":"\n\t\"\\{x}{piece}yy"}},"z":{{"S":"{}"}}}}"#,
                    "z".repeat(200)
                );
                assert_eq!(super::parse_item(&item, &mut Vec::new()), None, "{item}");
                assert!(
                    serde_json::from_str::<serde_json::Value>(&item).is_err(),
                    "{item}"
                );
            }
        }
    }

    #[test]
    fn every_byte_after_a_backslash_reads_as_serde_reads_it() {
        let text = r#"{"Records":[{"eventName":"INSERT","dynamodb":{"Keys":{"k":{"S":"a"}},"NewImage":{"k":{"S":"a"},"s":{"S":"q\ESCz"}},"SequenceNumber":"1"}}]}"#;
        let ascii = (0u8..0x80).map(char::from);
        for c in ascii.chain(['é', '€', '😀']) {
            let t = text.replace("ESC", c.encode_utf8(&mut [0; 4]));
            let fast = super::parse_page(&t, &mut ctx());
            let serde = parse_page_serde(&t, &mut ctx());
            // Only the two-byte escapes are valid (`\u` here lacks its
            // digits); the fast parser reads them as serde does and leaves
            // everything else to serde, which says what is wrong.
            let short = matches!(c, '"' | '\\' | '/' | 'b' | 'f' | 'n' | 'r' | 't');
            assert_eq!(serde.is_some(), short, "{c:?}");
            if short {
                assert_eq!(fast, serde, "{c:?}");
            } else {
                assert!(fast.is_none(), "{c:?}");
            }
        }
    }
}
