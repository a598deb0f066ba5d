//! On-demand discovery, the proxy's bookkeeping: which lookups are in flight
//! (concurrent first connections to one destination share one question), which
//! destinations the agent said are not in the mesh (cached briefly, so a client
//! hammering an outside address costs one question per [`NEGATIVE_TTL`]), and
//! which hosts the agent added to the view (sent again with the subscription
//! after a reconnect, so a restarted agent rebuilds the same view) until they
//! age out ([`crate::syncidle`]).
//!
//! Pure: waiters are any type (the client uses oneshot senders), time is
//! passed in.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// How long "not in the mesh" is believed before asking again.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(5);

/// What a lookup came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// In the mesh and visible: the service's host, now in the view.
    Found(String),
    /// Not in the mesh for this proxy: treat as outside (passthrough or
    /// REGISTRY_ONLY's refusal).
    NotInMesh,
    /// No answer: the agent is unreachable, the stream ended, or it refused
    /// to look (too many lookups). Treat as not in the mesh for now.
    Unavailable(String),
}

/// What to do with a new question.
#[derive(Debug, PartialEq, Eq)]
pub enum Ask<W> {
    /// Answer at once (cached).
    Now(Answer, W),
    /// Send `Lookup {target}` to the agent; the waiter is parked.
    Send,
    /// Already asked; the waiter is parked behind the first.
    Joined,
}

/// The table of one client.
#[derive(Debug)]
pub struct Lookups<W> {
    pending: HashMap<String, Vec<W>>,
    negative: HashMap<String, Instant>,
    found: BTreeSet<String>,
}

impl<W> Default for Lookups<W> {
    fn default() -> Self {
        Lookups {
            pending: HashMap::new(),
            negative: HashMap::new(),
            found: BTreeSet::new(),
        }
    }
}

impl<W> Lookups<W> {
    /// A question for `target` at `now`, from `waiter`.
    pub fn ask(&mut self, target: &str, waiter: W, now: Instant) -> Ask<W> {
        if let Some(at) = self.negative.get(target) {
            if now.saturating_duration_since(*at) < NEGATIVE_TTL {
                return Ask::Now(Answer::NotInMesh, waiter);
            }
            self.negative.remove(target);
        }
        match self.pending.get_mut(target) {
            Some(ws) => {
                ws.push(waiter);
                Ask::Joined
            }
            None => {
                self.pending.insert(target.to_string(), vec![waiter]);
                Ask::Send
            }
        }
    }

    /// The agent's answer for `target`: the waiters to tell, and what.
    pub fn answered(
        &mut self,
        target: &str,
        host: Option<String>,
        refused: Option<String>,
        now: Instant,
    ) -> (Answer, Vec<W>) {
        let answer = match (host, refused) {
            (Some(h), _) => {
                self.found.insert(h.clone());
                Answer::Found(h)
            }
            (None, Some(why)) => Answer::Unavailable(why),
            (None, None) => {
                self.negative.insert(target.to_string(), now);
                Answer::NotInMesh
            }
        };
        (answer, self.pending.remove(target).unwrap_or_default())
    }

    /// The stream ended: every parked waiter, to be told [`Answer::Unavailable`].
    pub fn disconnected(&mut self) -> Vec<W> {
        self.pending.drain().flat_map(|(_, ws)| ws).collect()
    }

    /// Hosts the agent added on demand (for the next subscription).
    pub fn found(&self) -> &BTreeSet<String> {
        &self.found
    }

    /// The proxy stopped using `hosts` (aged out): not asked for at the next
    /// subscription any more.
    pub fn forget(&mut self, hosts: &[String]) {
        for h in hosts {
            self.found.remove(h);
        }
    }

    /// Drops negative entries older than [`NEGATIVE_TTL`] (bounded memory
    /// under a scan of outside addresses).
    pub fn expire(&mut self, now: Instant) {
        self.negative
            .retain(|_, at| now.saturating_duration_since(*at) < NEGATIVE_TTL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_question_per_target_and_answers_for_everyone() {
        let t = Instant::now();
        let mut l = Lookups::default();
        assert_eq!(l.ask("10.96.0.20", 1, t), Ask::Send);
        assert_eq!(l.ask("10.96.0.20", 2, t), Ask::Joined);
        assert_eq!(l.ask("stock.inventory", 3, t), Ask::Send);
        let (a, ws) = l.answered("10.96.0.20", Some("stock.inv".into()), None, t);
        assert_eq!((a, ws), (Answer::Found("stock.inv".into()), vec![1, 2]));
        assert!(l.found().contains("stock.inv"));
        l.forget(&["stock.inv".into()]);
        assert!(l.found().is_empty());
        l.answered("10.96.0.20", Some("stock.inv".into()), None, t);
        assert!(l.found().contains("stock.inv"));
        // A found host is not cached as an answer: the view has it now.
        assert_eq!(l.ask("10.96.0.20", 4, t), Ask::Send);
        assert_eq!(l.disconnected().len(), 2);
    }

    #[test]
    fn not_in_mesh_is_cached_briefly_and_refusals_are_not() {
        let t = Instant::now();
        let mut l = Lookups::default();
        assert_eq!(l.ask("203.0.113.7", 1, t), Ask::Send);
        assert_eq!(
            l.answered("203.0.113.7", None, None, t).0,
            Answer::NotInMesh
        );
        assert_eq!(
            l.ask("203.0.113.7", 2, t + Duration::from_secs(1)),
            Ask::Now(Answer::NotInMesh, 2)
        );
        assert_eq!(l.ask("203.0.113.7", 3, t + NEGATIVE_TTL), Ask::Send);
        let (a, ws) = l.answered("203.0.113.7", None, Some("too many lookups".into()), t);
        assert_eq!(
            (a, ws),
            (Answer::Unavailable("too many lookups".into()), vec![3])
        );
        assert_eq!(l.ask("203.0.113.7", 4, t), Ask::Send);
        l.answered("203.0.113.7", None, None, t);
        l.expire(t + NEGATIVE_TTL);
        assert!(l.negative.is_empty());
    }
}
