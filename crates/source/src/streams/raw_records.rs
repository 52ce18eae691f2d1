//! GetRecords' response body, kept as it came.
//!
//! The SDK would parse every record into its own types (a map per image, an
//! enum per value), which the reader then has to turn back into GetRecords
//! JSON for the page parser that the replay source shares: three passes over
//! every record. Instead, an interceptor on each GetRecords call takes a
//! successful response's body as it streams in, keeps the bytes, and hands
//! the SDK an empty object to deserialize; the reader parses the kept body
//! whole. Errors are left alone, so the SDK still classifies them and
//! retries as before. The buffers bodies are read into are used again
//! (see [`give_back`]).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeDeserializationInterceptorContextMut;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::ConfigBag;
use bytes::Bytes;
use http_body::{Body, Frame};

/// Where one call's body ends up.
pub(crate) type Stash = Arc<Mutex<Option<Vec<u8>>>>;

/// Keeps the body of a successful response in its stash.
#[derive(Debug)]
pub(crate) struct KeepBody {
    pub(crate) stash: Stash,
}

impl Intercept for KeepBody {
    fn name(&self) -> &'static str {
        "KeepGetRecordsBody"
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let response = context.response_mut();
        if !response.status().is_success() {
            return Ok(());
        }
        let body = std::mem::replace(response.body_mut(), SdkBody::taken());
        *response.body_mut() = SdkBody::from_body_1_x(Capture {
            inner: body,
            body: None,
            stash: self.stash.clone(),
            done: false,
        });
        Ok(())
    }
}

/// A body that reads its inner body to the end, stashes it, and then
/// yields `{}` in its place.
struct Capture {
    inner: SdkBody,
    /// The body so far, in a buffer from [`take_buffer`]. Each frame is
    /// copied in as it comes and dropped at once, so hyper can use its read
    /// buffer again for the next one instead of taking fresh memory.
    body: Option<Vec<u8>>,
    stash: Stash,
    done: bool,
}

impl Body for Capture {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        this.body
                            .get_or_insert_with(take_buffer)
                            .extend_from_slice(&data);
                    }
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => {
                    this.done = true;
                    let kept = this.body.take().unwrap_or_default();
                    *this.stash.lock().unwrap_or_else(|e| e.into_inner()) = Some(kept);
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"{}")))));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// Buffers of bodies already read, to be filled again.
///
/// A page runs to a megabyte. A fresh megabyte per call is fresh memory
/// from the allocator, which the kernel zeroes page by page as it is first
/// written, and it was freed on another thread (the parse thread) than the
/// one that took it: together a large part of what a GetRecords call cost
/// beyond the parse. So the parse thread hands each body back
/// ([`give_back`]) and the next call fills it again.
static SPARE: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// Spare buffers kept at most: one per page in flight is plenty, and the
/// rest is freed.
const SPARE_BUFFERS: usize = 8;

/// A buffer larger than this (a body far beyond a page's usual size) is
/// freed rather than kept.
const SPARE_CAPACITY: usize = 8 << 20;

/// An empty buffer, one read before if there is one.
pub(crate) fn take_buffer() -> Vec<u8> {
    SPARE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .pop()
        .unwrap_or_default()
}

/// Hands a body that has been read back, to be filled by a later call.
pub(crate) fn give_back(mut body: Vec<u8>) {
    if body.capacity() == 0 || body.capacity() > SPARE_CAPACITY {
        return;
    }
    body.clear();
    let mut spare = SPARE.lock().unwrap_or_else(|e| e.into_inner());
    if spare.len() < SPARE_BUFFERS {
        spare.push(body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_back_buffer_is_taken_again_empty_with_its_capacity() {
        let mut body = Vec::with_capacity(4096);
        body.extend_from_slice(b"{\"Records\":[]}");
        let at = body.as_ptr();
        give_back(body);
        // Other tests may hand buffers back too: look for this one.
        let mut taken = Vec::new();
        let found = loop {
            let buffer = take_buffer();
            if buffer.capacity() == 0 {
                break None;
            }
            if buffer.as_ptr() == at {
                break Some(buffer);
            }
            taken.push(buffer);
        };
        taken.into_iter().for_each(give_back);
        let buffer = found.expect("the buffer given back");
        assert!(buffer.is_empty());
        assert_eq!(buffer.capacity(), 4096);
    }

    #[test]
    fn oversized_and_empty_buffers_are_not_kept() {
        let huge = Vec::<u8>::with_capacity(SPARE_CAPACITY + 1);
        let at = huge.as_ptr();
        give_back(huge);
        give_back(Vec::new());
        let mut taken = Vec::new();
        loop {
            let buffer = take_buffer();
            if buffer.capacity() == 0 {
                break;
            }
            assert_ne!(buffer.as_ptr(), at);
            taken.push(buffer);
        }
        taken.into_iter().for_each(give_back);
    }
}
