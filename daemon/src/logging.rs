//! Log output: where `tracing` events go and which ones pass.
//!
//! * **Output** ([`LogFormat`]): `--log-format` wins, then `[log] format`
//!   (for `run`), else `auto`. `auto` picks the journal when systemd
//!   connected stderr to it ([`crate::systemd::journal_stream_is_stderr`]),
//!   else human-readable text on stderr (ANSI colours only on a terminal).
//!   When the journal is chosen but its socket cannot be reached, logs go to
//!   stderr as text, with a warning.
//! * **Filter**: `WASMGATE_LOG` wins, then `[log] level` (for `run`), else
//!   `info` for `run` and `warn` for the one-shot commands (they report
//!   their own results on stdout/stderr).
//!
//! Logs never go to stdout: it carries data (`replay` output, `outbox
//! export`).
//!
//! In the journal every key/value of an event becomes a field `F_<KEY>`
//! (`journalctl -u wasmgate F_STREAM=greenhouse`), and the message text
//! keeps them too (`source failed source="line" error=…`), so that plain
//! `journalctl` shows what the text output shows.

use std::fmt::{self, Write as _};
use std::path::Path;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

pub use crate::settings::{LogConfig, LogFormat};

/// The environment variable holding a log filter; it wins over `[log] level`.
pub const LOG_ENV: &str = "WASMGATE_LOG";

/// What the command line and the configuration ask of logging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogOptions {
    /// `--log-format`, if given.
    pub format: Option<LogFormat>,
    /// The configuration's `[log]` section (`run` only).
    pub config: Option<LogConfig>,
    /// The filter when neither `WASMGATE_LOG` nor a config sets one.
    pub default_level: &'static str,
}

/// Where logs went, as [`init`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Native journal entries.
    Journald,
    /// Human-readable lines on stderr.
    Text,
    /// JSON lines on stderr.
    Json,
}

/// The output a format asks for: `auto` is the journal only when stderr is
/// the journal stream.
pub fn choose_output(format: LogFormat, stderr_is_journal: bool) -> Output {
    match format {
        LogFormat::Auto if stderr_is_journal => Output::Journald,
        LogFormat::Auto | LogFormat::Text => Output::Text,
        LogFormat::Json => Output::Json,
        LogFormat::Journald => Output::Journald,
    }
}

/// The filter in force and warnings about the ones refused: `env`
/// (`WASMGATE_LOG`) if valid, else the config's level, else the default.
pub fn choose_filter(env: Option<&str>, options: &LogOptions) -> (String, Vec<String>) {
    let mut warnings = Vec::new();
    if let Some(env) = env.filter(|e| !e.trim().is_empty()) {
        match crate::settings::check_log_filter(env) {
            Ok(()) => return (env.to_string(), warnings),
            Err(e) => warnings.push(format!("{LOG_ENV} ignored: {e}")),
        }
    }
    let filter = match &options.config {
        // `Config::load` refuses an invalid level; this is only a guard.
        Some(c) if crate::settings::check_log_filter(&c.level).is_ok() => c.level.clone(),
        _ => options.default_level.to_string(),
    };
    (filter, warnings)
}

/// The `[log]` section of the config file at `path`, read leniently before
/// logging starts: `None` when the file cannot be read or the section is
/// invalid. `Config::load` reads the file again and reports any error.
pub fn config_section(path: &Path) -> Option<LogConfig> {
    #[derive(serde::Deserialize)]
    struct OnlyLog {
        #[serde(default)]
        log: LogConfig,
    }
    let text = std::fs::read_to_string(path).ok()?;
    let log = toml::from_str::<OnlyLog>(&text).ok()?.log;
    log.validate().is_ok().then_some(log)
}

/// Install the global subscriber; returns the output chosen. Call once, at
/// the start of `main`; later calls change nothing.
pub fn init(options: &LogOptions) -> Output {
    let env = std::env::var(LOG_ENV).ok();
    let (filter, mut warnings) = choose_filter(env.as_deref(), options);
    // Checked by `choose_filter`; `EnvFilter::new` would only drop bad parts.
    let filter = EnvFilter::new(filter);
    let format = options
        .format
        .or(options.config.as_ref().map(|c| c.format))
        .unwrap_or_default();
    let mut output = choose_output(format, crate::systemd::journal_stream_is_stderr());
    let registry = tracing_subscriber::registry().with(filter);
    let installed = match output {
        Output::Journald => match tracing_journald::layer() {
            Ok(journal) => registry.with(FieldsInMessage::new(journal)).try_init(),
            Err(e) => {
                warnings.push(format!(
                    "the journal is not reachable ({e}); logging to stderr instead"
                ));
                output = Output::Text;
                registry.with(text_layer()).try_init()
            }
        },
        Output::Text => registry.with(text_layer()).try_init(),
        Output::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    if installed.is_ok() {
        for w in warnings {
            tracing::warn!("{w}");
        }
    }
    output
}

fn text_layer<S>() -> impl Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
}

/// Most fields an event may have for [`FieldsInMessage`] to rewrite it
/// (message included); larger events pass unchanged.
const MAX_FIELDS: usize = 32;

/// Wraps the journal layer so the message also carries the event's
/// key/values (`message k=v …`, as the text output shows them): the journal
/// layer puts only the message into `MESSAGE` and the rest into `F_*`
/// fields, which `journalctl` does not show by default. Every other layer
/// call passes through unchanged.
pub struct FieldsInMessage<L> {
    inner: L,
}

impl<L> FieldsInMessage<L> {
    /// Wrap `inner`.
    pub fn new(inner: L) -> Self {
        FieldsInMessage { inner }
    }
}

/// An event's values, recorded as the journal layer would write them.
#[derive(Default)]
struct Recorded {
    message: Option<String>,
    /// Field, value, whether it was a string (`record_str`).
    fields: Vec<(Field, String, bool)>,
}

impl Visit for Recorded {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = Some(value.to_string());
        } else {
            self.fields.push((field.clone(), value.to_string(), true));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.message = Some(format!("{value:?}"));
        } else {
            self.fields
                .push((field.clone(), format!("{value:?}"), false));
        }
    }
}

impl Recorded {
    /// `message k=v …` like the text format: strings quoted, `log.*`
    /// bookkeeping of bridged `log` records left out.
    fn line(&self) -> String {
        let mut line = self.message.clone().unwrap_or_default();
        for (field, value, is_str) in &self.fields {
            if field.name().starts_with("log.") {
                continue;
            }
            if !line.is_empty() {
                line.push(' ');
            }
            let _ = if *is_str {
                write!(line, "{}={value:?}", field.name())
            } else {
                write!(line, "{}={value}", field.name())
            };
        }
        line
    }
}

impl<S, L> Layer<S> for FieldsInMessage<L>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    L: Layer<S>,
{
    fn on_register_dispatch(&self, subscriber: &tracing::Dispatch) {
        self.inner.on_register_dispatch(subscriber)
    }

    fn on_layer(&mut self, subscriber: &mut S) {
        self.inner.on_layer(subscriber)
    }

    fn register_callsite(
        &self,
        metadata: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        self.inner.register_callsite(metadata)
    }

    fn enabled(&self, metadata: &tracing::Metadata<'_>, ctx: Context<'_, S>) -> bool {
        self.inner.enabled(metadata, ctx)
    }

    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        self.inner.on_new_span(attrs, id, ctx)
    }

    fn on_record(
        &self,
        span: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: Context<'_, S>,
    ) {
        self.inner.on_record(span, values, ctx)
    }

    fn on_follows_from(
        &self,
        span: &tracing::span::Id,
        follows: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        self.inner.on_follows_from(span, follows, ctx)
    }

    fn event_enabled(&self, event: &Event<'_>, ctx: Context<'_, S>) -> bool {
        self.inner.event_enabled(event, ctx)
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut recorded = Recorded::default();
        event.record(&mut recorded);
        let message_field = meta.fields().field("message");
        let (Some(message_field), Some(_)) = (message_field, &recorded.message) else {
            return self.inner.on_event(event, ctx);
        };
        if recorded.fields.is_empty() || recorded.fields.len() >= MAX_FIELDS {
            return self.inner.on_event(event, ctx);
        }
        // The same event (same callsite, so the same field set and
        // metadata) with the message replaced by the whole line and every
        // other value as recorded: strings stay strings, the rest is the
        // text the journal layer would have written for it.
        let line = recorded.line();
        let line = tracing::field::display(&line);
        let strs: Vec<&str> = recorded.fields.iter().map(|(_, v, _)| v.as_str()).collect();
        let shown: Vec<_> = strs.iter().map(tracing::field::display).collect();
        let mut values: [(&Field, Option<&dyn tracing::Value>); MAX_FIELDS] =
            [(&message_field, None); MAX_FIELDS];
        values[0] = (&message_field, Some(&line));
        for (i, (field, _, is_str)) in recorded.fields.iter().enumerate() {
            let value: &dyn tracing::Value = if *is_str { &strs[i] } else { &shown[i] };
            values[i + 1] = (field, Some(value));
        }
        let value_set = meta.fields().value_set(&values);
        let rewritten = if event.is_contextual() {
            Event::new(meta, &value_set)
        } else {
            Event::new_child_of(event.parent().cloned(), meta, &value_set)
        };
        self.inner.on_event(&rewritten, ctx)
    }

    fn on_enter(&self, id: &tracing::span::Id, ctx: Context<'_, S>) {
        self.inner.on_enter(id, ctx)
    }

    fn on_exit(&self, id: &tracing::span::Id, ctx: Context<'_, S>) {
        self.inner.on_exit(id, ctx)
    }

    fn on_close(&self, id: tracing::span::Id, ctx: Context<'_, S>) {
        self.inner.on_close(id, ctx)
    }

    fn on_id_change(&self, old: &tracing::span::Id, new: &tracing::span::Id, ctx: Context<'_, S>) {
        self.inner.on_id_change(old, new, ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// What a journal-like inner layer sees: (field, value, via record_str).
    type Seen = Arc<Mutex<Vec<Vec<(String, String, bool)>>>>;

    struct Capture(Seen);

    struct Fields(Vec<(String, String, bool)>);

    impl Visit for Fields {
        fn record_str(&mut self, field: &Field, value: &str) {
            self.0.push((field.name().into(), value.into(), true));
        }
        fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
            self.0
                .push((field.name().into(), format!("{value:?}"), false));
        }
    }

    impl<S: Subscriber> Layer<S> for Capture {
        fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
            let mut f = Fields(Vec::new());
            event.record(&mut f);
            self.0.lock().unwrap().push(f.0);
        }
    }

    fn capture(emit: impl FnOnce()) -> Vec<Vec<(String, String, bool)>> {
        let seen = Seen::default();
        let subscriber =
            tracing_subscriber::registry().with(FieldsInMessage::new(Capture(seen.clone())));
        tracing::subscriber::with_default(subscriber, emit);
        seen.lock().unwrap().clone()
    }

    fn s(name: &str, value: &str, is_str: bool) -> (String, String, bool) {
        (name.into(), value.into(), is_str)
    }

    #[test]
    fn journal_message_carries_the_key_values_and_the_fields_stay() {
        let seen = capture(|| {
            let err = "device gone";
            tracing::warn!(source = "line", n = 3, error = %err, ok = true, "source failed");
        });
        assert_eq!(
            seen,
            vec![vec![
                s(
                    "message",
                    r#"source failed source="line" n=3 error=device gone ok=true"#,
                    false
                ),
                s("source", "line", true),
                s("n", "3", false),
                s("error", "device gone", false),
                s("ok", "true", false),
            ]]
        );
    }

    #[test]
    fn events_without_key_values_or_message_pass_unchanged() {
        let seen = capture(|| {
            tracing::info!("started");
            tracing::info!(x = 1);
        });
        assert_eq!(
            seen,
            vec![
                vec![s("message", "started", false)],
                vec![s("x", "1", false)]
            ]
        );
    }

    #[test]
    fn auto_means_the_journal_only_on_the_journal_stream() {
        assert_eq!(choose_output(LogFormat::Auto, true), Output::Journald);
        assert_eq!(choose_output(LogFormat::Auto, false), Output::Text);
        assert_eq!(choose_output(LogFormat::Text, true), Output::Text);
        assert_eq!(choose_output(LogFormat::Json, true), Output::Json);
        assert_eq!(choose_output(LogFormat::Journald, false), Output::Journald);
    }

    #[test]
    fn filter_env_wins_then_config_then_default() {
        let run = |level: &str| LogOptions {
            format: None,
            config: Some(LogConfig {
                level: level.into(),
                format: LogFormat::Auto,
            }),
            default_level: "info",
        };
        let other = LogOptions {
            format: None,
            config: None,
            default_level: "warn",
        };
        let none: Vec<String> = Vec::new();
        assert_eq!(choose_filter(None, &other), ("warn".into(), none.clone()));
        assert_eq!(
            choose_filter(None, &run("debug")),
            ("debug".into(), none.clone())
        );
        assert_eq!(
            choose_filter(Some("trace,rumqttc=warn"), &run("debug")),
            ("trace,rumqttc=warn".into(), none.clone())
        );
        assert_eq!(
            choose_filter(Some(" "), &run("debug")),
            ("debug".into(), none)
        );
        let (filter, warnings) = choose_filter(Some("loud"), &run("debug"));
        assert_eq!(filter, "debug");
        assert!(warnings[0].contains("WASMGATE_LOG ignored"), "{warnings:?}");
    }

    #[test]
    fn log_filters_refuse_a_misspelt_level() {
        use crate::settings::check_log_filter;
        for ok in [
            "info",
            "WARN",
            "off",
            "info,wasmgate::ota=debug",
            "wasmgate::ota",
        ] {
            assert_eq!(check_log_filter(ok), Ok(()), "{ok}");
        }
        for bad in ["", "infoo", "info,verbose", "wasmgate=loud"] {
            assert!(check_log_filter(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_log_section_is_read_leniently_before_the_config_is_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("wasmgate.toml");
        std::fs::write(
            &file,
            "[mqtt]\nhost = \"x\"\n[log]\nlevel = \"debug\"\nformat = \"json\"\n",
        )
        .unwrap();
        assert_eq!(
            config_section(&file),
            Some(LogConfig {
                level: "debug".into(),
                format: LogFormat::Json
            })
        );
        std::fs::write(&file, "[mqtt]\nhost = \"x\"\n").unwrap();
        assert_eq!(config_section(&file), Some(LogConfig::default()));
        std::fs::write(&file, "[log]\nlevel = \"loud\"\n").unwrap();
        assert_eq!(config_section(&file), None);
        assert_eq!(config_section(&dir.path().join("missing.toml")), None);
    }
}
