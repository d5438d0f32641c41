//! The kill contexts of users being moved or killed, indexed by their next deadline.
//!
//! A ring of directors loaded with many moves has one kill context per moved user, each
//! alive for at least `director_user_kick_delay`, and the driver asks for the next deadline
//! after every event. Scanning every context for it made each ring line cost O(moves), so
//! the deadlines are kept in an ordered index beside the map. Every change of a context
//! goes through [`Kills::update`], which re-indexes it, so the two can't drift.

use std::collections::{BTreeSet, HashMap};

use crate::effect::{KillCtx, KillState};
use crate::host::TagId;

/// Key of a kill context: the user's tag and hash.
pub(super) type KillKey = (TagId, u32);

/// When a context falls due, and whether that is its move timeout (any state but
/// `Delay`) rather than the end of its kick delay.
fn deadline_of(k: &KillCtx) -> (u64, bool) {
    match (k.state, k.delay_deadline) {
        (KillState::Delay, Some(d)) => (d, false),
        _ => (k.move_deadline, true),
    }
}

#[derive(Debug, Default)]
pub(super) struct Kills {
    map: HashMap<KillKey, KillCtx>,
    /// `(deadline, key)` of every context in `map`.
    by_deadline: BTreeSet<(u64, KillKey)>,
    /// Contexts looked at, counted by every accessor: a test checks that the work per move
    /// stays constant however many moves are in flight (any new accessor counts too).
    #[cfg(test)]
    pub(super) visited: std::cell::Cell<u64>,
}

impl Kills {
    fn visit(&self, n: usize) {
        #[cfg(test)]
        self.visited
            .set(self.visited.get() + u64::try_from(n).unwrap_or(u64::MAX));
        #[cfg(not(test))]
        let _ = n;
    }

    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    /// Approximate heap bytes: the map's capacity and the index's entries.
    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(super) fn heap_bytes(&self) -> usize {
        self.map.capacity() * (std::mem::size_of::<KillCtx>() + std::mem::size_of::<KillKey>())
            + self.by_deadline.len() * std::mem::size_of::<(u64, KillKey)>()
    }

    pub(super) fn contains(&self, key: &KillKey) -> bool {
        self.visit(1);
        self.map.contains_key(key)
    }

    pub(super) fn get(&self, key: &KillKey) -> Option<&KillCtx> {
        self.visit(1);
        self.map.get(key)
    }

    pub(super) fn insert(&mut self, key: KillKey, ctx: KillCtx) {
        self.visit(1);
        self.remove(&key);
        self.by_deadline.insert((deadline_of(&ctx).0, key));
        self.map.insert(key, ctx);
    }

    pub(super) fn remove(&mut self, key: &KillKey) -> Option<KillCtx> {
        self.visit(1);
        let ctx = self.map.remove(key)?;
        self.by_deadline.remove(&(deadline_of(&ctx).0, *key));
        Some(ctx)
    }

    /// Changes the context of `key` (if any) with `f` and re-indexes its deadline; returns
    /// what `f` returned.
    pub(super) fn update<R>(
        &mut self,
        key: &KillKey,
        f: impl FnOnce(&mut KillCtx) -> R,
    ) -> Option<R> {
        self.visit(1);
        let ctx = self.map.get_mut(key)?;
        let before = deadline_of(ctx).0;
        let r = f(ctx);
        let after = deadline_of(ctx).0;
        if before != after {
            self.by_deadline.remove(&(before, *key));
            self.by_deadline.insert((after, *key));
        }
        Some(r)
    }

    /// The earliest deadline of any context.
    pub(super) fn next_deadline(&self) -> Option<u64> {
        self.visit(1);
        self.by_deadline.first().map(|(d, _)| *d)
    }

    /// Contexts due at `now`, in key order, each with whether its move timed out.
    pub(super) fn due(&self, now: u64) -> Vec<(KillKey, bool)> {
        let mut due: Vec<(KillKey, bool)> = self
            .by_deadline
            .range(..=(now, (TagId(u16::MAX), u32::MAX)))
            .filter_map(|(_, key)| Some((*key, deadline_of(self.map.get(key)?).1)))
            .collect();
        self.visit(due.len());
        due.sort_unstable();
        due
    }

    /// Gives the memory back once most contexts are gone (a flush of a large host creates
    /// many at once) instead of keeping the peak for ever.
    pub(super) fn shrink(&mut self) {
        let (len, cap) = (self.map.len(), self.map.capacity());
        if cap > 1024 && len < cap / 8 {
            self.map.shrink_to(len * 2);
        }
    }
}
