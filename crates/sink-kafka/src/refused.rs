//! Messages a broker did not store, and what becomes of them.
//!
//! A broker takes or refuses a produce batch whole. A message refused for
//! what it is (too large, or failing the broker's record checks:
//! `INVALID_RECORD`, `POLICY_VIOLATION`) will be refused again: it goes to
//! the dead-letter topic, like a change that cannot be encoded, and the
//! rest flows on. Retried, it would stop the pipeline for good.
//!
//! The other messages of its batch come back failed too
//! (`_INVALID_DIFFERENT_RECORD`), through no fault of their own: they are
//! sent again. The idempotent producer has meanwhile stored what was sent
//! after them, so a message is sent again only when no later message with
//! its key (on its topic) was stored: that would put an item's older
//! change after its newer one, and on a compacted topic keep the older.
//! Such a message goes to the dead-letter topic instead, with a reason
//! that says so: kept, not lost, not written out of order. When another
//! message of those groups failed otherwise, none is sent alone: the pass
//! ends with that message's error, and the next one sends again whatever
//! its read-back does not find (the sink's `land`).

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::producer::{Outgoing, Sent};

/// How a message whose delivery failed with `error` ended.
pub(crate) fn sent_of(error: &KafkaError) -> Sent {
    let KafkaError::MessageProduction(code) = error else {
        return Sent::Failed(error.clone());
    };
    let refused = |why: &str| Sent::Refused(format!("the broker refused the message: {why}"));
    match code {
        RDKafkaErrorCode::MessageSizeTooLarge => refused("too large (MESSAGE_TOO_LARGE)"),
        RDKafkaErrorCode::InvalidRecord => {
            refused("it failed the broker's record checks (INVALID_RECORD)")
        }
        RDKafkaErrorCode::PolicyViolation => {
            refused("it breaks the topic's policy (POLICY_VIOLATION)")
        }
        RDKafkaErrorCode::InvalidDifferentRecord => Sent::Collateral,
        _ => Sent::Failed(error.clone()),
    }
}

/// What becomes of a message refused only because of its batch.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Collateral {
    /// Sent again: nothing later with its key was stored.
    Again,
    /// A later message with its key was stored: dead-lettered, why inside.
    Kept(String),
}

/// For each [`Sent::Collateral`] message of a group (by index), whether it
/// can still be sent in order, given the group's results and those of
/// every message sent after the group (`later`, all answered).
pub(crate) fn decide<'a>(
    messages: &'a [Outgoing],
    results: &'a [Sent],
    later: impl Iterator<Item = (&'a Outgoing, &'a Sent)> + Clone,
) -> Vec<(usize, Collateral)> {
    let stored =
        |(m, sent): (&'a Outgoing, &'a Sent)| matches!(sent, Sent::Stored { .. }).then_some(m);
    let mut out = Vec::new();
    for (i, (m, sent)) in messages.iter().zip(results).enumerate() {
        if !matches!(sent, Sent::Collateral) {
            continue;
        }
        let after = messages[i + 1..].iter().zip(&results[i + 1..]);
        let overtaken = after
            .chain(later.clone())
            .filter_map(stored)
            .any(|o| o.topic == m.topic && o.key == m.key);
        out.push((
            i,
            if overtaken {
                Collateral::Kept(
                    "not stored because another record of its batch was refused, and a later \
                     message with its key was stored meanwhile: kept here rather than written \
                     out of order"
                        .to_owned(),
                )
            } else {
                Collateral::Again
            },
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn message(topic: &str, key: &str) -> Outgoing {
        Outgoing {
            topic: Arc::from(topic),
            key: key.as_bytes().to_vec(),
            value: Some(b"v".to_vec()),
            headers: Vec::new(),
        }
    }

    fn stored() -> Sent {
        Sent::Stored {
            partition: 0,
            offset: 0,
        }
    }

    #[test]
    fn what_the_broker_refuses_for_what_it_is_is_dead_lettered() {
        for (code, named) in [
            (RDKafkaErrorCode::MessageSizeTooLarge, "MESSAGE_TOO_LARGE"),
            (RDKafkaErrorCode::InvalidRecord, "INVALID_RECORD"),
            (RDKafkaErrorCode::PolicyViolation, "POLICY_VIOLATION"),
        ] {
            match sent_of(&KafkaError::MessageProduction(code)) {
                Sent::Refused(why) => assert!(why.contains(named), "{why}"),
                other => panic!("{code:?}: {other:?}"),
            }
        }
        assert!(matches!(
            sent_of(&KafkaError::MessageProduction(
                RDKafkaErrorCode::InvalidDifferentRecord
            )),
            Sent::Collateral
        ));
        // Anything else may pass, or is the topic's or the client's.
        assert!(matches!(
            sent_of(&KafkaError::MessageProduction(
                RDKafkaErrorCode::NotEnoughReplicas
            )),
            Sent::Failed(_)
        ));
    }

    #[test]
    fn a_batch_mate_is_sent_again_unless_its_key_was_stored_later() {
        let messages = [
            message("t", "bad"),
            message("t", "a"),
            message("t", "b"),
            message("t", "c"),
            message("u", "a"),
            message("t", "b"),
        ];
        let results = [
            Sent::Refused("INVALID_RECORD".into()),
            Sent::Collateral,
            Sent::Collateral,
            Sent::Collateral,
            stored(),
            stored(),
        ];
        let later_messages = [message("t", "c"), message("t", "a")];
        let later_results = [stored(), Sent::Collateral];
        let decided = decide(
            &messages,
            &results,
            later_messages.iter().zip(&later_results),
        );
        let kept =
            |d: &Collateral| matches!(d, Collateral::Kept(why) if why.contains("out of order"));
        // `a`: a later `a` on another topic, and one on `t` not stored.
        assert_eq!(decided[0], (1, Collateral::Again));
        // `b`: stored again later in its own group.
        assert!(decided[1].0 == 2 && kept(&decided[1].1));
        // `c`: stored in a later group.
        assert!(decided[2].0 == 3 && kept(&decided[2].1));
        assert_eq!(decided.len(), 3);
    }
}
