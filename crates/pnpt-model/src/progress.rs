//! Progress of the long stages of training (backbone features, patch memory, every epoch) as
//! events for the program to show: the library draws nothing itself. A program passes a
//! callback in [`TrainOptions::progress_sink`](crate::TrainOptions::progress_sink);
//! `pnpt_cli::logging::progress_bars` turns the events into indicatif bars on stderr, which is
//! what `pnpt train` and `examples/train_mvtec.rs` show.

use std::fmt;
use std::sync::Arc;

/// One thing a stage reports.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum ProgressEvent<'a> {
    /// A stage begins: its name (`features`, `memory`, `epoch 2/3`) and its number of steps.
    Start {
        /// Name of the stage.
        stage: &'a str,
        /// Steps the stage will take.
        len: u64,
    },
    /// More of the current stage is done.
    Advance {
        /// Steps done since the last event.
        steps: u64,
        /// The stage's latest status (the running loss and speed of an epoch), if it has one.
        status: Option<&'a str>,
    },
    /// The current stage is over: done, or left early by an error.
    Finish,
}

/// The callback behind a [`Progress`].
type Callback = dyn Fn(ProgressEvent<'_>) + Send + Sync;

/// Where [`ProgressEvent`]s go: nowhere by default, or to a callback.
#[derive(Clone, Default)]
pub struct Progress(Option<Arc<Callback>>);

impl Progress {
    /// Sends every event to `callback` (called on the training thread; keep it quick).
    pub fn new(callback: impl Fn(ProgressEvent<'_>) + Send + Sync + 'static) -> Self {
        Self(Some(Arc::new(callback)))
    }

    /// Whether events go anywhere.
    pub fn is_enabled(&self) -> bool {
        self.0.is_some()
    }

    /// Starts a stage of `len` steps; it finishes when the returned [`Stage`] is dropped.
    pub(crate) fn stage(&self, name: &str, len: usize) -> Stage<'_> {
        let callback = self.0.as_deref();
        if let Some(f) = callback {
            f(ProgressEvent::Start { stage: name, len: len as u64 });
        }
        Stage(callback)
    }
}

impl fmt::Debug for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_enabled() { "Progress(callback)" } else { "Progress(none)" })
    }
}

/// A stage in progress: [`Stage::advance`] reports steps, dropping it reports the end (also
/// when an error leaves the stage early, so a program's bar does not stay on screen).
pub(crate) struct Stage<'a>(Option<&'a Callback>);

impl Stage<'_> {
    /// `steps` more steps done; `status` is called only when events go somewhere.
    pub(crate) fn advance(&self, steps: usize, status: impl FnOnce() -> Option<String>) {
        if let Some(f) = self.0 {
            let status = status();
            f(ProgressEvent::Advance { steps: steps as u64, status: status.as_deref() });
        }
    }
}

impl Drop for Stage<'_> {
    fn drop(&mut self) {
        if let Some(f) = self.0 {
            f(ProgressEvent::Finish);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[test]
    fn a_stage_reports_start_steps_status_and_finish() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let progress = Progress::new(move |e| sink.lock().unwrap().push(format!("{e:?}")));
        {
            let stage = progress.stage("epoch 1/2", 3);
            stage.advance(1, || None);
            stage.advance(2, || Some("loss 0.5".into()));
        }
        let seen = seen.lock().unwrap();
        assert_eq!(
            *seen,
            [
                r#"Start { stage: "epoch 1/2", len: 3 }"#,
                "Advance { steps: 1, status: None }",
                r#"Advance { steps: 2, status: Some("loss 0.5") }"#,
                "Finish"
            ]
        );
        let quiet = Progress::default();
        quiet.stage("features", 2).advance(1, || panic!("no status without a callback"));
        assert!(!quiet.is_enabled());
    }
}
