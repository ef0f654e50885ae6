//! What line-based protocols (FTP, SMTP) share: evaluating a protocol's patches against one
//! command, and the reply texts of refusals.

use stopgap_patch::expr::CommandView;
use stopgap_patch::{Action, Applied, Target};

use crate::audit::{event, excerpt, AuditEvent, Change};

/// What the patches decided about one command.
#[derive(Debug, Default)]
pub(crate) struct CommandVerdict {
    /// Refuse with this reply line (code and text, no line ending).
    pub reject: Option<String>,
    /// Close both connections.
    pub reset: bool,
    /// Cut the argument to this many bytes.
    pub truncate: Option<usize>,
    /// The audit events, in patch order.
    pub events: Vec<AuditEvent>,
}

/// The default text of a refusal with `code`, as servers word it.
#[must_use]
pub fn default_reply_text(code: u16) -> &'static str {
    match code {
        421 => "Service not available, closing control connection.",
        451 => "Requested action aborted: local error in processing.",
        500 => "Syntax error, command unrecognized.",
        501 => "Syntax error in parameters or arguments.",
        502 => "Command not implemented.",
        503 => "Bad sequence of commands.",
        504 => "Command not implemented for that parameter.",
        530 => "Not logged in.",
        550 => "Requested action not taken.",
        553 => "Requested action not taken: name not allowed.",
        554 => "Transaction failed.",
        _ => "Refused.",
    }
}

/// Evaluates `patches` against `view`; `base` is the event to fill for each match. Every
/// matching patch is recorded; the first refusal (or reset) decides.
pub(crate) fn evaluate(
    patches: &[Applied],
    view: &CommandView<'_>,
    base: &AuditEvent,
) -> CommandVerdict {
    let mut v = CommandVerdict::default();
    for applied in patches {
        let Some(evidence) = view.eval(&applied.patch.when) else {
            continue;
        };
        let patch = &applied.patch;
        let mut e = base.clone();
        e.event = event::PATCH_MATCH;
        e.patch = Some(patch.id.clone());
        e.cve = patch.cve.clone();
        e.action = Some(patch.action.name());
        e.mode = Some(applied.mode.as_str());
        e.field = Some(evidence.field.clone());
        e.excerpt = Some(excerpt(&evidence.value));
        if let Some(outcome) = applied.mode.observed_outcome(patch.action.name()) {
            e.outcome = outcome;
        } else if v.reject.is_some() || v.reset {
            e.outcome = "also_matched".into();
        } else {
            match &patch.action {
                Action::Reject { status, message } => {
                    let text = message
                        .clone()
                        .unwrap_or_else(|| default_reply_text(*status).to_string());
                    v.reject = Some(format!("{status} {text}"));
                    e.status = Some(*status);
                    e.outcome = "rejected".into();
                }
                Action::Reset => {
                    v.reset = true;
                    e.outcome = "reset".into();
                }
                Action::Truncate {
                    target: Target::CommandArg,
                    max_len,
                } => {
                    let keep = v.truncate.map_or(*max_len, |t| t.min(*max_len));
                    if view.arg.len() > keep {
                        v.truncate = Some(keep);
                        e.outcome = "truncated".into();
                        e.change = Some(Change {
                            target: "arg".into(),
                            before: excerpt(view.arg),
                            after: excerpt(&view.arg[..keep]),
                        });
                    } else {
                        e.outcome = "logged".into();
                    }
                }
                _ => e.outcome = "logged".into(),
            }
        }
        v.events.push(e);
    }
    v
}
