//! GetRecords' response body, kept as it came.
//!
//! The SDK would parse every record into its own types (a map per image, an
//! enum per value), which the reader then has to turn back into GetRecords
//! JSON for the page parser that the replay source shares: three passes over
//! every record. Instead, an interceptor on each GetRecords call takes a
//! successful response's body as it streams in, keeps the bytes, and hands
//! the SDK an empty object to deserialize; the reader parses the kept body
//! whole. Errors are left alone, so the SDK still classifies them and
//! retries as before.

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
            frames: Vec::new(),
            len: 0,
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
    /// The body's frames as they came, joined once at the end: one block of
    /// the right size, where growing a buffer as frames arrive (a page runs
    /// to a megabyte, often without Content-Length) takes a fresh block and
    /// a copy at every doubling.
    frames: Vec<Bytes>,
    len: usize,
    stash: Stash,
    done: bool,
}

impl Capture {
    fn joined(&mut self) -> Vec<u8> {
        let mut frames = std::mem::take(&mut self.frames);
        if frames.len() == 1
            && let Some(only) = frames.pop()
        {
            // Without a copy when hyper's buffer holds nothing else.
            return Vec::from(only);
        }
        let mut body = Vec::with_capacity(self.len);
        for frame in frames {
            body.extend_from_slice(&frame);
        }
        body
    }
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
                        this.len += data.len();
                        this.frames.push(data);
                    }
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => {
                    this.done = true;
                    let kept = this.joined();
                    *this.stash.lock().unwrap_or_else(|e| e.into_inner()) = Some(kept);
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"{}")))));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
