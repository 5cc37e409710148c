//! What a new version of an application must keep of the running one to take over its state.

use crate::{AppSpec, StepKind};

/// A new version drops stateful steps of the running application: their state would be lost.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the new version has no stateful step {} of the running application '{app}': its state \
     would be lost; keep the step's name in the new version, or let its state go with {}",
    quoted(.steps),
    flags(.steps)
)]
pub struct DroppedState {
    /// The running application's name.
    pub app: String,
    /// The stateful steps of the running version the new one lacks.
    pub steps: Vec<String>,
}

/// `--drop-state` names a step whose state it cannot drop.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DropStateError {
    #[error(
        "--drop-state {}: the running application '{app}' has no stateful step of that name \
         (its stateful steps: {})",
        quoted(.steps),
        quoted(.running)
    )]
    NotRunning {
        app: String,
        steps: Vec<String>,
        /// The running application's stateful steps.
        running: Vec<String>,
    },
    #[error(
        "--drop-state {}: the new version keeps that stateful step and takes over its state; \
         leave it out of --drop-state",
        quoted(.steps)
    )]
    Kept { steps: Vec<String> },
}

fn quoted(steps: &[String]) -> String {
    match steps {
        [] => "(none)".into(),
        _ => steps
            .iter()
            .map(|s| format!("'{s}'"))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

fn flags(steps: &[String]) -> String {
    steps
        .iter()
        .map(|s| format!("--drop-state '{s}'"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn stateful(spec: &AppSpec) -> Vec<String> {
    spec.steps
        .iter()
        .filter(|step| step.kind == StepKind::Stateful)
        .map(|step| step.name.clone())
        .collect()
}

/// Checks that `new` keeps every stateful step of `running`, by name, but for those in
/// `drop_state`: state is matched to steps by name when a new version takes over. Returns the
/// stateful steps of `running` whose state is dropped (named in `drop_state`, lacking in
/// `new`).
pub fn check_keeps_state(
    running: &AppSpec,
    new: &AppSpec,
    drop_state: &[String],
) -> Result<Vec<String>, DroppedState> {
    let now = stateful(new);
    let (dropped, steps): (Vec<String>, Vec<String>) = stateful(running)
        .into_iter()
        .filter(|name| !now.contains(name))
        .partition(|name| drop_state.contains(name));
    if steps.is_empty() {
        Ok(dropped)
    } else {
        Err(DroppedState {
            app: running.name.clone(),
            steps,
        })
    }
}

/// Checks what a deploy's `--drop-state` names: every step is a stateful step of `running`
/// that `new` lacks.
pub fn check_drop_state(
    running: &AppSpec,
    new: &AppSpec,
    drop_state: &[String],
) -> Result<(), DropStateError> {
    let (was, now) = (stateful(running), stateful(new));
    let unknown: Vec<String> = drop_state
        .iter()
        .filter(|s| !was.contains(s))
        .cloned()
        .collect();
    if !unknown.is_empty() {
        return Err(DropStateError::NotRunning {
            app: running.name.clone(),
            steps: unknown,
            running: was,
        });
    }
    let kept: Vec<String> = drop_state
        .iter()
        .filter(|s| now.contains(s))
        .cloned()
        .collect();
    if !kept.is_empty() {
        return Err(DropStateError::Kept { steps: kept });
    }
    Ok(())
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
        assert_eq!(check_keeps_state(&running, &new, &[]), Ok(Vec::new()));
    }

    #[test]
    fn a_version_dropping_a_stateful_step_is_refused_naming_it() {
        let running = app(&[("count", StepKind::Stateful), ("sum", StepKind::Stateful)]);
        // A step of the same name that keeps no state keeps nothing.
        let new = app(&[("tally", StepKind::Stateful), ("sum", StepKind::Stateless)]);
        let err = check_keeps_state(&running, &new, &[]).unwrap_err();
        assert_eq!(err.steps, vec!["count".to_string(), "sum".to_string()]);
        let text = err.to_string();
        assert!(
            text.starts_with(
                "the new version has no stateful step 'count', 'sum' of the running \
                 application 'word_count'"
            ),
            "{text}"
        );
        assert!(
            text.ends_with("--drop-state 'count' --drop-state 'sum'"),
            "{text}"
        );
    }

    #[test]
    fn a_version_dropping_a_stateful_step_named_in_drop_state_may_take_over() {
        let running = app(&[("count", StepKind::Stateful), ("sum", StepKind::Stateful)]);
        let new = app(&[("sum", StepKind::Stateful)]);
        let drop = ["count".to_string()];
        assert_eq!(
            check_keeps_state(&running, &new, &drop),
            Ok(vec!["count".to_string()])
        );
        assert_eq!(check_drop_state(&running, &new, &drop), Ok(()));
    }

    #[test]
    fn drop_state_of_a_step_that_does_not_run_or_is_kept_is_refused_naming_it() {
        let running = app(&[
            ("count", StepKind::Stateful),
            ("split", StepKind::Stateless),
        ]);
        let new = app(&[("count", StepKind::Stateful)]);
        let err = check_drop_state(&running, &new, &["split".into(), "count".into()])
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "--drop-state 'split': the running application 'word_count' has no stateful step \
             of that name (its stateful steps: 'count')"
        );
        let err = check_drop_state(&running, &new, &["count".into()])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("--drop-state 'count': the new version keeps that stateful step"),
            "{err}"
        );
    }
}
