//! Stop sequences (OpenAI's `stop`): generated text is cut before the first occurrence of any of
//! them. Text arrives a delta at a time and a stop sequence may span deltas (tokens), so text
//! that could be the start of one is held back until the next delta shows it is not; nothing a
//! client received can later turn out to be part of a stop sequence.
//!
//! ```text
//! stop ["\n\n"]:  "Hi.\n" → send "Hi."  (hold "\n")
//!                 "\nBye" → stopped, send ""  (the answer is "Hi.")
//! ```

use blyan_api_types::{STOP_SEQUENCE_BYTES_MAX, STOP_SEQUENCES_MAX};

use crate::error::ChatError;

/// What one delta of text became.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StopStep {
    /// Text known not to be part of a stop sequence: send it on.
    pub(crate) send: String,
    /// A stop sequence was found: `send` is the last text of the answer.
    pub(crate) stopped: bool,
}

/// Finds stop sequences in a stream of text deltas.
#[derive(Debug, Clone, Default)]
pub(crate) struct StopMatcher {
    stops: Vec<String>,
    /// Text received but not sent: a suffix that is a prefix of some stop sequence.
    held: String,
}

impl StopMatcher {
    /// A matcher for `stops`, checked: at most [`STOP_SEQUENCES_MAX`], each non-empty and at most
    /// [`STOP_SEQUENCE_BYTES_MAX`] bytes. `None` or an empty list stops nothing.
    pub(crate) fn new(stops: Option<&[String]>) -> Result<Self, ChatError> {
        let stops = stops.unwrap_or_default();
        if stops.len() > STOP_SEQUENCES_MAX {
            return Err(ChatError::InvalidRequest {
                field: "stop".to_owned(),
                reason: format!(
                    "at most {STOP_SEQUENCES_MAX} stop sequences, got {}",
                    stops.len()
                ),
            });
        }
        for (index, stop) in stops.iter().enumerate() {
            let reason = if stop.is_empty() {
                "must not be empty".to_owned()
            } else if stop.len() > STOP_SEQUENCE_BYTES_MAX {
                format!(
                    "{} bytes, longer than {STOP_SEQUENCE_BYTES_MAX}",
                    stop.len()
                )
            } else {
                continue;
            };
            return Err(ChatError::InvalidRequest {
                field: format!("stop[{index}]"),
                reason,
            });
        }
        Ok(Self {
            stops: stops.to_vec(),
            held: String::new(),
        })
    }

    /// Takes the next delta of generated text.
    pub(crate) fn push(&mut self, text: &str) -> StopStep {
        if self.stops.is_empty() {
            return StopStep {
                send: text.to_owned(),
                stopped: false,
            };
        }
        self.held.push_str(text);
        // Invariant: `held` contains no whole stop sequence before this push, so the first
        // occurrence in it is the first in the answer.
        let first = self
            .stops
            .iter()
            .filter_map(|stop| self.held.find(stop.as_str()))
            .min();
        if let Some(at) = first {
            self.held.truncate(at);
            return StopStep {
                send: std::mem::take(&mut self.held),
                stopped: true,
            };
        }
        // The longest suffix that some stop sequence begins with stays held.
        let keep_from = self
            .held
            .char_indices()
            .map(|(at, _)| at)
            .find(|&at| {
                let tail = &self.held[at..];
                self.stops.iter().any(|stop| stop.starts_with(tail))
            })
            .unwrap_or(self.held.len());
        let kept = self.held.split_off(keep_from);
        StopStep {
            send: std::mem::replace(&mut self.held, kept),
            stopped: false,
        }
    }

    /// The generation ended without a stop sequence: the held text is part of the answer.
    pub(crate) fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(stops: &[&str]) -> StopMatcher {
        let stops: Vec<String> = stops.iter().map(|stop| (*stop).to_owned()).collect();
        StopMatcher::new(Some(&stops)).expect("valid stops")
    }

    /// Feeds `deltas`, returning what was sent, delta by delta, and whether it stopped.
    fn run(stops: &[&str], deltas: &[&str]) -> (Vec<String>, bool) {
        let mut matcher = matcher(stops);
        let mut sent = Vec::new();
        for delta in deltas {
            let step = matcher.push(delta);
            sent.push(step.send);
            if step.stopped {
                return (sent, true);
            }
        }
        sent.push(matcher.finish());
        (sent, false)
    }

    #[test]
    fn without_stops_everything_passes_at_once() {
        assert_eq!(
            run(&[], &["a", "b"]),
            (vec!["a".into(), "b".into(), String::new()], false)
        );
    }

    #[test]
    fn a_stop_inside_one_delta_cuts_before_it() {
        assert_eq!(run(&["END"], &["abcENDxyz"]), (vec!["abc".into()], true));
    }

    #[test]
    fn a_stop_spanning_two_deltas_is_held_then_dropped() {
        // "E" could start "END": held; "ND" completes it.
        assert_eq!(
            run(&["END"], &["abE", "ND tail"]),
            (vec!["ab".into(), String::new()], true)
        );
    }

    #[test]
    fn held_text_that_turns_out_not_to_be_a_stop_is_sent_later() {
        assert_eq!(
            run(&["END"], &["abE", "x", "y"]),
            (
                vec!["ab".into(), "Ex".into(), "y".into(), String::new()],
                false
            )
        );
    }

    #[test]
    fn text_held_at_the_end_of_the_generation_is_part_of_the_answer() {
        assert_eq!(
            run(&["END"], &["abEN"]),
            (vec!["ab".into(), "EN".into()], false)
        );
    }

    #[test]
    fn the_earliest_of_several_stops_wins() {
        assert_eq!(run(&["yz", "cd"], &["abcdxyz"]), (vec!["ab".into()], true));
        // A later-listed but earlier-occurring stop also wins over a longer pending one.
        assert_eq!(run(&["abcX", "b"], &["abc"]), (vec!["a".into()], true));
    }

    #[test]
    fn held_text_stays_on_character_boundaries() {
        assert_eq!(
            run(&["é!"], &["caf", "é", "?"]),
            (
                vec!["caf".into(), String::new(), "é?".into(), String::new()],
                false
            )
        );
    }

    #[test]
    fn too_many_empty_or_long_stops_are_refused_naming_the_field() {
        let check = |stops: Vec<String>, field: &str| match StopMatcher::new(Some(&stops)) {
            Err(ChatError::InvalidRequest { field: got, .. }) => assert_eq!(got, field),
            other => panic!("expected invalid {field}, got {other:?}"),
        };
        check(vec!["a".to_owned(); STOP_SEQUENCES_MAX + 1], "stop");
        check(vec!["a".to_owned(), String::new()], "stop[1]");
        check(vec!["x".repeat(STOP_SEQUENCE_BYTES_MAX + 1)], "stop[0]");
        // At the bounds: accepted.
        assert!(StopMatcher::new(Some(&vec!["a".to_owned(); STOP_SEQUENCES_MAX])).is_ok());
        assert!(StopMatcher::new(Some(&["x".repeat(STOP_SEQUENCE_BYTES_MAX)])).is_ok());
    }
}
