//! Each pipeline's log: the lines logged inside its `serve_pipeline` span
//! (the run, its writes, its plugin's `host.log` and output) kept in a
//! bounded ring for `GET /v1/pipelines/{name}/logs`. A tenant's lines are
//! rate-limited together (`log_lines_per_s`); what is dropped is counted.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use std::time::Instant;

use serde::Serialize;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// Lines kept per pipeline.
pub const RING_LINES: usize = 1000;
/// The span a pipeline's task runs in.
pub const SPAN: &str = "serve_pipeline";

#[derive(Debug, Clone, Serialize)]
pub struct Line {
    pub unix_ms: u64,
    pub level: &'static str,
    pub message: String,
}

pub struct Ring {
    lines: Mutex<VecDeque<Line>>,
    bucket: Arc<Bucket>,
}

/// A tenant's log rate: tokens refilled at `rate` per second, bursts of
/// one second's worth.
pub struct Bucket {
    rate: f64,
    state: Mutex<(f64, Instant)>,
    pub dropped: std::sync::atomic::AtomicU64,
}

impl Bucket {
    fn take(&self) -> bool {
        let mut state = self.state.lock();
        let now = Instant::now();
        let (tokens, last) = *state;
        let tokens = (tokens + now.duration_since(last).as_secs_f64() * self.rate).min(self.rate.max(1.0));
        if tokens < 1.0 {
            *state = (tokens, now);
            self.dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return false;
        }
        *state = (tokens - 1.0, now);
        true
    }
}

impl Ring {
    pub fn lines(&self) -> Vec<Line> {
        self.lines.lock().iter().cloned().collect()
    }

    pub fn dropped(&self) -> u64 {
        self.bucket.dropped.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn push(&self, line: Line) {
        if !self.bucket.take() {
            return;
        }
        let mut lines = self.lines.lock();
        if lines.len() == RING_LINES {
            lines.pop_front();
        }
        lines.push_back(line);
    }
}

#[derive(Default)]
struct Rings {
    pipelines: HashMap<(String, String), Arc<Ring>>,
    tenants: HashMap<String, Arc<Bucket>>,
}

fn rings() -> &'static Mutex<Rings> {
    static RINGS: OnceLock<Mutex<Rings>> = OnceLock::new();
    RINGS.get_or_init(Default::default)
}

fn lock() -> parking_lot::MutexGuard<'static, Rings> {
    rings().lock()
}

/// The pipeline's ring, made on first use; `lines_per_s` is the tenant's rate.
pub fn ring(tenant: &str, pipeline: &str, lines_per_s: u32) -> Arc<Ring> {
    let mut rings = lock();
    let bucket = rings
        .tenants
        .entry(tenant.to_string())
        .or_insert_with(|| {
            Arc::new(Bucket {
                rate: f64::from(lines_per_s),
                state: Mutex::new((f64::from(lines_per_s).max(1.0), Instant::now())),
                dropped: Default::default(),
            })
        })
        .clone();
    rings
        .pipelines
        .entry((tenant.to_string(), pipeline.to_string()))
        .or_insert_with(|| {
            Arc::new(Ring {
                lines: Mutex::new(VecDeque::new()),
                bucket,
            })
        })
        .clone()
}

pub fn existing(tenant: &str, pipeline: &str) -> Option<Arc<Ring>> {
    lock()
        .pipelines
        .get(&(tenant.to_string(), pipeline.to_string()))
        .cloned()
}

pub fn forget(tenant: &str, pipeline: Option<&str>) {
    let mut rings = lock();
    rings
        .pipelines
        .retain(|(t, p), _| !(t == tenant && pipeline.is_none_or(|name| name == p)));
    if pipeline.is_none() {
        rings.tenants.remove(tenant);
    }
}

/// The tracing layer that fills the rings.
pub struct Layer;

#[derive(Default)]
struct Keys {
    tenant: Option<String>,
    pipeline: Option<String>,
}

impl Visit for Keys {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.record_debug(field, &value)
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        let text = text.trim_matches('"').to_string();
        match field.name() {
            "tenant" => self.tenant = Some(text),
            "pipeline" => self.pipeline = Some(text),
            _ => {}
        }
    }
}

/// `message key=value ...`
#[derive(Default)]
struct Text {
    message: String,
    fields: String,
}

impl Visit for Text {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message.push_str(value),
            name => {
                let _ = write!(self.fields, " {name}={value}");
            }
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => {
                let _ = write!(self.message, "{value:?}");
            }
            name => {
                let _ = write!(self.fields, " {name}={value:?}");
            }
        }
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> tracing_subscriber::Layer<S> for Layer {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() != SPAN {
            return;
        }
        let mut keys = Keys::default();
        attrs.record(&mut keys);
        let (Some(tenant), Some(pipeline)) = (keys.tenant, keys.pipeline) else {
            return;
        };
        if let (Some(ring), Some(span)) = (existing(&tenant, &pipeline), ctx.span(id)) {
            span.extensions_mut().insert(ring);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let Some(scope) = ctx.event_scope(event) else { return };
        let Some(ring) = scope
            .into_iter()
            .find_map(|span| span.extensions().get::<Arc<Ring>>().cloned())
        else {
            return;
        };
        let mut text = Text::default();
        event.record(&mut text);
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        ring.push(Line {
            unix_ms,
            level: event.metadata().level().as_str(),
            message: text.message + &text.fields,
        });
    }
}
