//! What a new version of an application must keep of the running one to take over its state.

use crate::{AppSpec, StepKind};

/// A new version drops stateful steps of the running application: their state would be lost.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the new version has no stateful step {} of the running application '{app}': its state \
     would be lost; keep the step's name in the new version",
    quoted(.steps)
)]
pub struct DroppedState {
    /// The running application's name.
    pub app: String,
    /// The stateful steps of the running version the new one lacks.
    pub steps: Vec<String>,
}

fn quoted(steps: &[String]) -> String {
    steps
        .iter()
        .map(|s| format!("'{s}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks that `new` keeps every stateful step of `running`, by name: state is matched to
/// steps by name when a new version takes over.
pub fn check_keeps_state(running: &AppSpec, new: &AppSpec) -> Result<(), DroppedState> {
    let stateful = |s: &AppSpec| -> Vec<String> {
        s.steps
            .iter()
            .filter(|step| step.kind == StepKind::Stateful)
            .map(|step| step.name.clone())
            .collect()
    };
    let now = stateful(new);
    let steps: Vec<String> = stateful(running)
        .into_iter()
        .filter(|name| !now.contains(name))
        .collect();
    if steps.is_empty() {
        Ok(())
    } else {
        Err(DroppedState {
            app: running.name.clone(),
            steps,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StepSpec;

    fn app(steps: &[(&str, StepKind)]) -> AppSpec {
        AppSpec {
            name: "word_count".into(),
            sources: Vec::new(),
            sinks: Vec::new(),
            steps: steps
                .iter()
                .map(|(name, kind)| StepSpec {
                    name: name.to_string(),
                    kind: *kind,
                })
                .collect(),
        }
    }

    #[test]
    fn a_version_keeping_every_stateful_step_by_name_may_take_over() {
        let running = app(&[
            ("split", StepKind::Stateless),
            ("count", StepKind::Stateful),
        ]);
        let new = app(&[
            ("lower", StepKind::Stateless),
            ("count", StepKind::Stateful),
            ("extra", StepKind::Stateful),
        ]);
        assert_eq!(check_keeps_state(&running, &new), Ok(()));
    }

    #[test]
    fn a_version_dropping_a_stateful_step_is_refused_naming_it() {
        let running = app(&[("count", StepKind::Stateful), ("sum", StepKind::Stateful)]);
        // A step of the same name that keeps no state keeps nothing.
        let new = app(&[("tally", StepKind::Stateful), ("sum", StepKind::Stateless)]);
        let err = check_keeps_state(&running, &new).unwrap_err();
        assert_eq!(err.steps, vec!["count".to_string(), "sum".to_string()]);
        let text = err.to_string();
        assert!(
            text.starts_with(
                "the new version has no stateful step 'count', 'sum' of the running \
                 application 'word_count'"
            ),
            "{text}"
        );
    }
}
