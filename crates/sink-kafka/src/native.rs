//! Messages handed to librdkafka without being copied.
//!
//! rust-rdkafka's `send` asks librdkafka to copy every key and value
//! (`RD_KAFKA_MSG_F_COPY`), names the topic by a string it allocates per
//! message (librdkafka then looks the topic up by name, under a lock), and
//! allocates a C string per header name. The producer keeps every message
//! of a group alive until the group's last answer anyway, so the copy buys
//! nothing: on items near 400 KB it was a tenth of the Kafka path's CPU,
//! mostly faulting in fresh memory for each copy. Here a message goes over
//! by `rd_kafka_produceva` with no copy flag, to a topic handle opened once
//! per topic, with header names passed with their lengths.
//!
//! The price is a lifetime librdkafka cannot see: it reads a message's key
//! and value until it reports the message's delivery, or until the client
//! is destroyed. [`produce`] is `unsafe` for that, and
//! [`crate::producer::KafkaProducer`] keeps the buffers alive as long.

#![allow(unsafe_code)]

use std::collections::HashMap;
use std::ffi::{CString, c_void};
use std::ptr::NonNull;
use std::sync::Arc;

use rdkafka::IntoOpaque as _;
use rdkafka::bindings as rd;
use rdkafka::types::RDKafkaErrorCode;

use crate::producer::HeaderValue;

/// A topic handle of one client, destroyed when dropped.
///
/// Dropping it before the client is fine: messages queued for the topic
/// hold their own reference to it.
struct TopicHandle(NonNull<rd::rd_kafka_topic_t>);

impl Drop for TopicHandle {
    fn drop(&mut self) {
        // SAFETY: the handle came from `rd_kafka_topic_new` and is dropped
        // once; librdkafka counts references to the topic.
        unsafe { rd::rd_kafka_topic_destroy(self.0.as_ptr()) }
    }
}

/// The topic handles a producer has opened, by name.
///
/// Must be dropped before the client they belong to (librdkafka asks that
/// every handle be given back before `rd_kafka_destroy`).
#[derive(Default)]
pub(crate) struct Topics {
    handles: HashMap<Arc<str>, TopicHandle>,
}

// SAFETY: librdkafka's topic handles may be used from any thread; the map
// is only reached through `&mut`.
unsafe impl Send for Topics {}

impl Topics {
    /// The handle of `topic` on `client`, opened on first use with the
    /// client's default topic settings.
    fn handle(
        &mut self,
        client: *mut rd::rd_kafka_t,
        topic: &Arc<str>,
    ) -> Result<*mut rd::rd_kafka_topic_t, RDKafkaErrorCode> {
        if let Some(handle) = self.handles.get(topic) {
            return Ok(handle.0.as_ptr());
        }
        // Topic names are checked where they are made; a NUL is no name.
        let name = CString::new(topic.as_bytes()).map_err(|_| RDKafkaErrorCode::InvalidArgument)?;
        // SAFETY: `client` is a live client (the caller's contract) and
        // `name` a NUL-terminated string; a null configuration means the
        // client's default topic configuration.
        let raw = unsafe { rd::rd_kafka_topic_new(client, name.as_ptr(), std::ptr::null_mut()) };
        let Some(handle) = NonNull::new(raw) else {
            // SAFETY: reads the calling thread's last librdkafka error.
            let code = unsafe { rd::rd_kafka_last_error() };
            return Err(code.into());
        };
        self.handles.insert(topic.clone(), TopicHandle(handle));
        Ok(handle.as_ptr())
    }
}

/// One message as librdkafka takes it.
pub(crate) struct Message<'a> {
    pub topic: &'a Arc<str>,
    pub key: &'a [u8],
    /// `None` is a tombstone.
    pub value: Option<&'a [u8]>,
    pub headers: &'a [(&'static str, HeaderValue)],
    /// Comes back with the delivery report, as rust-rdkafka's opaque.
    pub serial: usize,
}

/// Hands `message` to `client`'s queue without copying its key or value.
///
/// On `Err` librdkafka has not taken the message and holds nothing of it.
///
/// # Safety
///
/// `client` is a live producer, and `message.key` and `message.value`
/// stay allocated and unchanged until librdkafka has reported the
/// message's delivery (its report served by a poll) or the client is
/// destroyed, whichever comes first.
pub(crate) unsafe fn produce(
    client: *mut rd::rd_kafka_t,
    topics: &mut Topics,
    message: &Message<'_>,
) -> Result<(), RDKafkaErrorCode> {
    let topic = topics.handle(client, message.topic)?;
    // SAFETY: a new list; librdkafka copies each header added to it.
    let headers = unsafe { rd::rd_kafka_headers_new(message.headers.len()) };
    for (name, value) in message.headers {
        let value = value.as_bytes();
        // SAFETY: both slices are valid for the lengths given; a name with
        // a length need not be NUL-terminated.
        unsafe {
            rd::rd_kafka_header_add(
                headers,
                name.as_ptr().cast(),
                name.len() as isize,
                value.as_ptr().cast(),
                value.len() as isize,
            );
        }
    }
    let args = [
        arg(rd::rd_kafka_vtype_t::RD_KAFKA_VTYPE_RKT, |u| u.rkt = topic),
        // No copy and no free: the caller keeps the buffers.
        arg(rd::rd_kafka_vtype_t::RD_KAFKA_VTYPE_MSGFLAGS, |u| u.i = 0),
        arg(rd::rd_kafka_vtype_t::RD_KAFKA_VTYPE_KEY, |u| {
            u.mem = memory(Some(message.key));
        }),
        arg(rd::rd_kafka_vtype_t::RD_KAFKA_VTYPE_VALUE, |u| {
            u.mem = memory(message.value);
        }),
        arg(rd::rd_kafka_vtype_t::RD_KAFKA_VTYPE_OPAQUE, |u| {
            u.ptr = message.serial.into_ptr();
        }),
        arg(rd::rd_kafka_vtype_t::RD_KAFKA_VTYPE_HEADERS, |u| {
            u.headers = headers;
        }),
    ];
    // SAFETY: every argument is initialized for its type; the buffers'
    // lifetime is the caller's contract. On success librdkafka owns the
    // header list.
    let error = unsafe { rd::rd_kafka_produceva(client, args.as_ptr(), args.len()) };
    if error.is_null() {
        return Ok(());
    }
    // SAFETY: a non-null error from `rd_kafka_produceva`, read then freed
    // once; on failure the header list is still ours.
    unsafe {
        let code = rd::rd_kafka_error_code(error);
        rd::rd_kafka_error_destroy(error);
        rd::rd_kafka_headers_destroy(headers);
        Err(code.into())
    }
}

/// A key or value as librdkafka reads it: a null pointer is none (a
/// tombstone's value), a pointer with length zero an empty one.
fn memory(bytes: Option<&[u8]>) -> rd::rd_kafka_vu_s__bindgen_ty_1__bindgen_ty_1 {
    rd::rd_kafka_vu_s__bindgen_ty_1__bindgen_ty_1 {
        ptr: bytes.map_or(std::ptr::null_mut(), |b| {
            b.as_ptr().cast_mut().cast::<c_void>()
        }),
        size: bytes.map_or(0, <[u8]>::len),
    }
}

/// One argument of `rd_kafka_produceva`: its type and the union member
/// `set` writes.
fn arg(
    vtype: rd::rd_kafka_vtype_t,
    set: impl FnOnce(&mut rd::rd_kafka_vu_s__bindgen_ty_1),
) -> rd::rd_kafka_vu_t {
    let mut u = rd::rd_kafka_vu_s__bindgen_ty_1 { _pad: [0; 64] };
    set(&mut u);
    rd::rd_kafka_vu_t { vtype, u }
}
