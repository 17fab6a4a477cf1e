//! Many messages per call, for the partitions a full refresh or incremental
//! run assigns itself.
//!
//! `BaseConsumer::poll` hands over one message per call: the consumer
//! queue's lock (which librdkafka's fetch thread takes to fill it), an event
//! object, an `Arc` and two clock reads per message.
//! `rd_kafka_consume_batch_queue` takes up to a page under one lock, as
//! confluent-kafka's `consume(n)` does. It cannot read the consumer queue
//! itself: that queue also carries the rebalance, statistics and error
//! events that rdkafka turns into `Context` calls, and it would serve them
//! without those (statistics dropped, a rebalance answered with an
//! unassign). So each partition's fetch queue is forwarded to a queue of its
//! own before `assign` starts fetching (a forward the application made
//! survives the fetch start: `rd_kafka_toppar_op_fetch_start`), and the
//! consumer queue, now carrying events only, is still served by `poll`.
//!
//! Stream mode keeps `poll`: its partitions come with rebalances, and a
//! forward made after librdkafka's assign would race the first fetch, whose
//! messages could then be read from the consumer queue after later ones of
//! the same partition from this one.

use std::ffi::{c_int, CStr, CString};
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, Timestamp};

use super::consumer::KafkaConsumer;
use super::offsets::Tp;

pub struct Batches<'c> {
    client: NonNull<rd::rd_kafka_t>,
    queue: NonNull<rd::rd_kafka_queue_t>,
    partitions: Vec<(CString, i32)>,
    slots: Vec<*mut rd::rd_kafka_message_t>,
    _consumer: PhantomData<&'c KafkaConsumer>,
}

impl<'c> Batches<'c> {
    /// Forwards the fetch queues of `partitions` to a queue of their own,
    /// read `most` messages at a time at most. Call it before `assign`.
    pub fn new(consumer: &'c KafkaConsumer, partitions: &[Tp], most: usize) -> Result<Self, String> {
        let client = NonNull::new(consumer.client().native_ptr()).ok_or("no librdkafka client")?;
        // SAFETY: a live client; the queue is ours, destroyed on drop.
        let queue = NonNull::new(unsafe { rd::rd_kafka_queue_new(client.as_ptr()) }).ok_or("no queue")?;
        let mut batches = Self {
            client,
            queue,
            partitions: Vec::with_capacity(partitions.len()),
            slots: vec![std::ptr::null_mut(); most.max(1)],
            _consumer: PhantomData,
        };
        for (topic, partition) in partitions {
            let name = CString::new(topic.as_bytes()).map_err(|_| format!("topic `{topic}` has a NUL byte"))?;
            batches.forward(&name, *partition, queue.as_ptr())?;
            batches.partitions.push((name, *partition));
        }
        Ok(batches)
    }

    fn forward(&self, topic: &CStr, partition: i32, to: *mut rd::rd_kafka_queue_t) -> Result<(), String> {
        // SAFETY: a live client and a NUL-terminated name; the partition's
        // queue handle is released right after its forward is set (the
        // partition keeps its queue).
        unsafe {
            let fetched = rd::rd_kafka_queue_get_partition(self.client.as_ptr(), topic.as_ptr(), partition);
            if fetched.is_null() {
                return Err(format!("no fetch queue for {topic:?}/{partition}"));
            }
            rd::rd_kafka_queue_forward(fetched, to);
            rd::rd_kafka_queue_destroy(fetched);
        }
        Ok(())
    }

    /// Up to `most` messages: those already fetched at once, else the first
    /// to come within `wait` (then only it: the rest are taken next time
    /// without waiting, as `poll` did).
    pub fn read(&mut self, wait: Duration, most: usize) -> Batch<'_> {
        let most = most.clamp(1, self.slots.len());
        let mut n = self.consume(Duration::ZERO, most);
        if n == 0 && !wait.is_zero() {
            n = self.consume(wait, 1);
        }
        Batch {
            slots: &self.slots[..n],
            next: 0,
        }
    }

    fn consume(&mut self, wait: Duration, most: usize) -> usize {
        let timeout = c_int::try_from(wait.as_millis()).unwrap_or(c_int::MAX);
        // SAFETY: `slots` has room for `most` pointers; each message returned
        // is destroyed once, when its Batch is dropped.
        let n =
            unsafe { rd::rd_kafka_consume_batch_queue(self.queue.as_ptr(), timeout, self.slots.as_mut_ptr(), most) };
        n.max(0) as usize
    }
}

impl Drop for Batches<'_> {
    /// Ends the forwards and destroys the queue with what it still holds:
    /// its messages hold references that librdkafka's close waits for.
    fn drop(&mut self) {
        for (topic, partition) in &self.partitions {
            if let Err(e) = self.forward(topic, *partition, std::ptr::null_mut()) {
                tracing::debug!("kafka: {e}");
            }
        }
        // SAFETY: our own queue, not used after this.
        unsafe { rd::rd_kafka_queue_destroy(self.queue.as_ptr()) };
    }
}

/// The messages of one read, destroyed when it is dropped.
pub struct Batch<'b> {
    slots: &'b [*mut rd::rd_kafka_message_t],
    next: usize,
}

impl<'b> Batch<'b> {
    /// The next message, or the error librdkafka put in its place (the end
    /// of a partition comes as `PartitionEOF`).
    pub fn next(&mut self) -> Option<Result<RawMessage<'_>, KafkaError>> {
        let &ptr = self.slots.get(self.next)?;
        self.next += 1;
        // SAFETY: librdkafka returned it and it lives until the Batch drops.
        let message = unsafe { &*ptr };
        Some(match message.err {
            rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR => Ok(RawMessage(message)),
            rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__PARTITION_EOF => {
                Err(KafkaError::PartitionEOF(message.partition))
            }
            e => Err(KafkaError::MessageConsumption(e.into())),
        })
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        for &m in self.slots {
            // SAFETY: each message of the read, destroyed once.
            unsafe { rd::rd_kafka_message_destroy(m) };
        }
    }
}

/// A message as librdkafka holds it (what rdkafka's `BorrowedMessage` is,
/// without the event it is wrapped in).
pub struct RawMessage<'m>(&'m rd::rd_kafka_message_t);

/// Bytes of a message field; none for a null pointer.
///
/// # Safety
///
/// `ptr` and `len` describe one field of a live message.
unsafe fn field<'a>(ptr: *const std::ffi::c_void, len: usize) -> Option<&'a [u8]> {
    // SAFETY: as the caller promises.
    (!ptr.is_null()).then(|| unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) })
}

impl Message for RawMessage<'_> {
    type Headers = RawHeaders;

    fn key(&self) -> Option<&[u8]> {
        // SAFETY: the key of a live message.
        unsafe { field(self.0.key, self.0.key_len) }
    }

    fn payload(&self) -> Option<&[u8]> {
        // SAFETY: the payload of a live message.
        unsafe { field(self.0.payload, self.0.len) }
    }

    unsafe fn payload_mut(&mut self) -> Option<&mut [u8]> {
        // Never needed here: messages are read only.
        None
    }

    fn topic(&self) -> &str {
        // SAFETY: the topic handle of a live message has a NUL-terminated name.
        unsafe { CStr::from_ptr(rd::rd_kafka_topic_name(self.0.rkt)) }
            .to_str()
            .expect("topic names are ASCII")
    }

    fn partition(&self) -> i32 {
        self.0.partition
    }

    fn offset(&self) -> i64 {
        self.0.offset
    }

    fn timestamp(&self) -> Timestamp {
        use rd::rd_kafka_timestamp_type_t as Type;
        let mut kind = Type::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
        // SAFETY: a live message and a place for the type.
        let at = unsafe { rd::rd_kafka_message_timestamp(self.0, &mut kind) };
        match kind {
            _ if at == -1 => Timestamp::NotAvailable,
            Type::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE => Timestamp::NotAvailable,
            Type::RD_KAFKA_TIMESTAMP_CREATE_TIME => Timestamp::CreateTime(at),
            Type::RD_KAFKA_TIMESTAMP_LOG_APPEND_TIME => Timestamp::LogAppendTime(at),
        }
    }

    fn headers(&self) -> Option<&RawHeaders> {
        let mut headers = std::ptr::null_mut();
        // SAFETY: a live message; the headers belong to it.
        let err = unsafe { rd::rd_kafka_message_headers(self.0, &mut headers) };
        (err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && !headers.is_null())
            // SAFETY: RawHeaders is a zero-sized view of librdkafka's headers,
            // at their address, living as long as the message.
            .then(|| unsafe { &*(headers as *const RawHeaders) })
    }
}

/// librdkafka's headers of a message, seen at their own address.
pub struct RawHeaders(());

impl RawHeaders {
    fn native(&self) -> *const rd::rd_kafka_headers_t {
        (self as *const Self).cast()
    }
}

impl Headers for RawHeaders {
    fn count(&self) -> usize {
        // SAFETY: the headers of a live message.
        unsafe { rd::rd_kafka_header_cnt(self.native()) }
    }

    fn try_get(&self, idx: usize) -> Option<Header<'_, &[u8]>> {
        let (mut name, mut value, mut size) = (std::ptr::null(), std::ptr::null(), 0);
        // SAFETY: the headers of a live message; what comes back lives as long.
        unsafe {
            let err = rd::rd_kafka_header_get_all(self.native(), idx, &mut name, &mut value, &mut size);
            if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                return None;
            }
            Some(Header {
                key: CStr::from_ptr(name).to_str().expect("header names are UTF-8"),
                value: field(value, size),
            })
        }
    }
}
