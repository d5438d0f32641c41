//! The user directory (§3): which host each active user (per tag and hash) is assigned to,
//! and since when.
//!
//! A director may track millions of users, so the layout is built for memory (≤ 40 bytes
//! per user including the index, against ~92 in Dovecot):
//! * records live densely in one `Vec<Record>` of 20-byte entries (hash, timestamp,
//!   expiry-list links, host id, tag id + weak/killing bits); removal swaps the last record
//!   into the hole, so capacity tracks the live count;
//! * the index is an open-addressing table of `u32` record indices (linear probing,
//!   backward-shift deletion, load ≤ 0.8) with a parallel byte per slot holding 8 bits of
//!   the key (0 = empty): a probe reads a record only when that byte matches, so a miss
//!   (every user a joining director learns) touches one small array instead of a record
//!   per step, and a hit reads one record;
//! * expiry order is an intrusive doubly-linked list through the records, kept sorted by
//!   timestamp (a refresh to "now" is an O(1) move to the tail);
//! * kill/move state lives elsewhere ([`crate::kill`]); only a flag bit is kept here so that
//!   expiry can skip users being moved.
//!
//! Expiry is lazy (lookups drop expired users) plus [`UserDirectory::expire`], which the
//! owner calls at [`UserDirectory::next_expiry`].

use crate::host::{HostId, TagId};

/// Weak users are kept this long past expiry before being dropped ("weakness stuck").
pub const WEAK_GRACE_SECS: u64 = 30;
/// Smallest allowed `director_user_expire` (Dovecot's config check).
pub const MIN_USER_EXPIRE_SECS: u32 = 10;
/// Most users tracked; indices are `u32` with one value reserved.
pub const MAX_USERS: usize = (u32::MAX - 1) as usize;

const NIL: u32 = u32::MAX;
const EMPTY: u32 = u32::MAX;
const TAG_MASK: u16 = 0x3FFF;
const FLAG_WEAK: u16 = 0x4000;
const FLAG_KILLING: u16 = 0x8000;
const MIN_TABLE: usize = 16;

#[derive(Debug, Clone, Copy)]
struct Record {
    hash: u32,
    timestamp: u32,
    prev: u32,
    next: u32,
    host: u16,
    tag_flags: u16,
}

impl Record {
    fn tag(&self) -> TagId {
        TagId(self.tag_flags & TAG_MASK)
    }
}

/// A copy of one user record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct User {
    /// User hash.
    pub hash: u32,
    /// Tag of the directory holding it (= its host's tag).
    pub tag: TagId,
    /// Assigned host.
    pub host: HostId,
    /// Last refresh, Unix seconds.
    pub timestamp: u32,
    /// Weak: a director asked the ring to confirm a host change (§6, §10.6).
    pub weak: bool,
    /// A move/kick is in progress (the record doesn't expire meanwhile).
    pub killing: bool,
}

/// A user of [`UserDirectory::refs`]: its key and where its record was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserRef {
    /// User hash.
    pub hash: u32,
    /// Tag.
    pub tag: TagId,
    at: u32,
}

/// What an expiry sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExpireReport {
    /// Users dropped because they expired.
    pub expired: usize,
    /// Weak users dropped after the grace period ("weakness stuck"), `(tag, hash)`.
    pub weak_stuck: Vec<(TagId, u32)>,
}

/// The user directory of all tags.
#[derive(Debug, Clone)]
pub struct UserDirectory {
    records: Vec<Record>,
    table: Vec<u32>,
    /// One byte of each slot's key (never 0), or 0 for an empty slot.
    fingerprints: Vec<u8>,
    head: u32,
    tail: u32,
    expire_secs: u32,
    host_counts: Vec<u32>,
    /// Bumped by every change of an assignment (added, refreshed, moved, dropped), so the
    /// owner can tell whether the directory changed since it last saved it.
    changes: u64,
    /// Records stepped over to find a place in expiry order: a test checks it stays
    /// proportional to the users refreshed.
    #[cfg(test)]
    link_steps: u64,
}

fn sat32(t: u64) -> u32 {
    t.min(u64::from(u32::MAX)) as u32
}

impl UserDirectory {
    /// An empty directory with `director_user_expire` (clamped to ≥ 10 s).
    pub fn new(expire_secs: u32) -> Self {
        Self {
            records: Vec::new(),
            table: vec![EMPTY; MIN_TABLE],
            fingerprints: vec![0; MIN_TABLE],
            head: NIL,
            tail: NIL,
            expire_secs: expire_secs.max(MIN_USER_EXPIRE_SECS),
            host_counts: Vec::new(),
            changes: 0,
            #[cfg(test)]
            link_steps: 0,
        }
    }

    /// `director_user_expire` in seconds.
    pub fn expire_secs(&self) -> u32 {
        self.expire_secs
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// No users?
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Grows whenever an assignment is added, refreshed, moved or dropped (never shrinks).
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// Users assigned to a host.
    pub fn user_count(&self, host: HostId) -> u32 {
        self.host_counts.get(host.0 as usize).copied().unwrap_or(0)
    }

    /// Heap bytes held by the directory (records, index, per-host counters), from capacities.
    pub fn heap_bytes(&self) -> usize {
        self.records.capacity() * std::mem::size_of::<Record>()
            + self.table.capacity() * std::mem::size_of::<u32>()
            + self.fingerprints.capacity()
            + self.host_counts.capacity() * std::mem::size_of::<u32>()
    }

    // ---- index -------------------------------------------------------------------------

    /// The slot where (tag, hash) would sit without collisions, and its fingerprint.
    fn ideal(&self, tag: TagId, hash: u32) -> (usize, u8) {
        let bits = self.table.len().trailing_zeros();
        let key = u64::from(hash) ^ (u64::from(tag.0) << 32);
        let mixed = key.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        // Bits below the ones that pick the slot (tables stay under 2^40 slots), never 0.
        let fp = ((mixed >> 16) as u8).max(1);
        ((mixed >> (64 - bits)) as usize, fp)
    }

    /// Where (tag, hash) sits: `Ok(slot)`, or `Err(first empty slot of its probe run)`.
    fn probe(&self, tag: TagId, hash: u32) -> Result<usize, usize> {
        let mask = self.table.len() - 1;
        let (mut i, fp) = self.ideal(tag, hash);
        loop {
            let f = self.fingerprints[i];
            if f == 0 {
                return Err(i);
            }
            if f == fp {
                let rec = &self.records[self.table[i] as usize];
                if rec.hash == hash && rec.tag() == tag {
                    return Ok(i);
                }
            }
            i = (i + 1) & mask;
        }
    }

    fn find_slot(&self, tag: TagId, hash: u32) -> Option<usize> {
        self.probe(tag, hash).ok()
    }

    fn index(&self, tag: TagId, hash: u32) -> Option<u32> {
        self.find_slot(tag, hash).map(|s| self.table[s])
    }

    fn table_insert(&mut self, ri: u32) {
        let rec = self.records[ri as usize];
        let mask = self.table.len() - 1;
        let (mut i, fp) = self.ideal(rec.tag(), rec.hash);
        while self.fingerprints[i] != 0 {
            i = (i + 1) & mask;
        }
        self.table[i] = ri;
        self.fingerprints[i] = fp;
    }

    fn table_remove_slot(&mut self, mut i: usize) {
        let mask = self.table.len() - 1;
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            if self.fingerprints[j] == 0 {
                break;
            }
            let r = self.table[j];
            let rec = self.records[r as usize];
            let (k, _) = self.ideal(rec.tag(), rec.hash);
            // Move j back into the hole at i unless its ideal slot lies cyclically in (i, j].
            let keep = if i <= j {
                i < k && k <= j
            } else {
                i < k || k <= j
            };
            if !keep {
                self.table[i] = r;
                self.fingerprints[i] = self.fingerprints[j];
                i = j;
            }
        }
        self.table[i] = EMPTY;
        self.fingerprints[i] = 0;
    }

    fn grow_table_if_needed(&mut self) {
        if (self.records.len() + 1) * 5 <= self.table.len() * 4 {
            return;
        }
        let new_len = self.table.len() * 2;
        self.table = vec![EMPTY; new_len];
        self.fingerprints = vec![0; new_len];
        for ri in 0..self.records.len() {
            self.table_insert(ri as u32);
        }
    }

    // ---- expiry list -------------------------------------------------------------------

    fn unlink(&mut self, ri: u32) {
        let Record { prev, next, .. } = self.records[ri as usize];
        if prev == NIL {
            self.head = next;
        } else {
            self.records[prev as usize].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.records[next as usize].prev = prev;
        }
    }

    /// Links `ri` after the last record whose timestamp is `<=` its own (usually the tail).
    fn link_sorted(&mut self, ri: u32) {
        let ts = self.records[ri as usize].timestamp;
        let mut after = self.tail;
        while after != NIL && self.records[after as usize].timestamp > ts {
            after = self.records[after as usize].prev;
            #[cfg(test)]
            {
                self.link_steps += 1;
            }
        }
        let next = if after == NIL {
            self.head
        } else {
            self.records[after as usize].next
        };
        {
            let r = &mut self.records[ri as usize];
            r.prev = after;
            r.next = next;
        }
        if after == NIL {
            self.head = ri;
        } else {
            self.records[after as usize].next = ri;
        }
        if next == NIL {
            self.tail = ri;
        } else {
            self.records[next as usize].prev = ri;
        }
    }

    fn count_add(&mut self, host: u16) {
        let i = host as usize;
        if self.host_counts.len() <= i {
            self.host_counts.resize(i + 1, 0);
        }
        self.host_counts[i] += 1;
    }

    fn count_sub(&mut self, host: u16) {
        if let Some(c) = self.host_counts.get_mut(host as usize) {
            *c = c.saturating_sub(1);
        }
    }

    fn to_user(r: &Record) -> User {
        User {
            hash: r.hash,
            tag: r.tag(),
            host: HostId(r.host),
            timestamp: r.timestamp,
            weak: r.tag_flags & FLAG_WEAK != 0,
            killing: r.tag_flags & FLAG_KILLING != 0,
        }
    }

    /// Removes record `ri` (swap-remove) and returns it.
    fn remove_index(&mut self, ri: u32) -> User {
        self.changes += 1;
        let rec = self.records[ri as usize];
        if let Some(slot) = self.find_slot(rec.tag(), rec.hash) {
            self.table_remove_slot(slot);
        }
        self.unlink(ri);
        self.count_sub(rec.host);
        let last = (self.records.len() - 1) as u32;
        if ri != last {
            let moved = self.records[last as usize];
            if let Some(slot) = self.find_slot(moved.tag(), moved.hash) {
                self.table[slot] = ri;
            }
            if moved.prev == NIL {
                self.head = ri;
            } else {
                self.records[moved.prev as usize].next = ri;
            }
            if moved.next == NIL {
                self.tail = ri;
            } else {
                self.records[moved.next as usize].prev = ri;
            }
            self.records[ri as usize] = moved;
        }
        self.records.pop();
        Self::to_user(&rec)
    }

    // ---- predicates (§3.2, §3.3) -------------------------------------------------------

    fn deadline(&self, r: &Record) -> u64 {
        u64::from(r.timestamp) + u64::from(self.expire_secs)
    }

    /// Whether the record must be dropped at `now` (expired and not protected by a kill in
    /// progress or by the weak grace period).
    fn droppable(&self, r: &Record, now: u64) -> bool {
        let d = self.deadline(r);
        if d > now || r.tag_flags & FLAG_KILLING != 0 {
            return false;
        }
        if r.tag_flags & FLAG_WEAK != 0 {
            return d + WEAK_GRACE_SECS <= now;
        }
        true
    }

    /// `near_secs = clamp(E*10/100, 3, 30)`.
    pub fn near_expiry_secs(&self) -> u32 {
        // u64: E*10 must not overflow for huge settings.
        (u64::from(self.expire_secs) * 10 / 100).clamp(3, 30) as u32
    }

    /// §3.3 *near expiring*: `timestamp + (E - near_secs) < now`.
    pub fn is_near_expiring(&self, user: &User, now: u64) -> bool {
        u64::from(user.timestamp) + u64::from(self.expire_secs - self.near_expiry_secs()) < now
    }

    /// §3.3 *recently updated*: `timestamp + E/2 >= now`.
    pub fn is_recently_updated(&self, user: &User, now: u64) -> bool {
        u64::from(user.timestamp) + u64::from(self.expire_secs / 2) >= now
    }

    /// Admin "expire" time: `timestamp + E`.
    pub fn expire_time(&self, user: &User) -> u64 {
        u64::from(user.timestamp) + u64::from(self.expire_secs)
    }

    // ---- public operations -------------------------------------------------------------

    /// The record for (tag, hash) without expiry checks.
    pub fn peek(&self, tag: TagId, hash: u32) -> Option<User> {
        self.index(tag, hash)
            .map(|ri| Self::to_user(&self.records[ri as usize]))
    }

    /// Every user in expiry order (oldest first) as a reference that stays valid while the
    /// directory changes: [`Self::peek_ref`] finds the user again, at once while its record
    /// hasn't moved (as when nobody was removed meanwhile).
    pub fn refs(&self) -> impl Iterator<Item = UserRef> + '_ {
        let mut cur = self.head;
        std::iter::from_fn(move || {
            if cur == NIL {
                return None;
            }
            let r = &self.records[cur as usize];
            let at = cur;
            cur = r.next;
            Some(UserRef {
                hash: r.hash,
                tag: r.tag(),
                at,
            })
        })
    }

    /// The record `user` refers to, if the user is still there (without expiry checks).
    pub fn peek_ref(&self, user: &UserRef) -> Option<User> {
        match self.records.get(user.at as usize) {
            // (tag, hash) is unique: a record that matches is the user.
            Some(r) if r.hash == user.hash && r.tag() == user.tag => Some(Self::to_user(r)),
            _ => self.peek(user.tag, user.hash),
        }
    }

    /// The live record for (tag, hash); an expired one is dropped (lazy expiry).
    pub fn get(&mut self, tag: TagId, hash: u32, now: u64) -> Option<User> {
        let ri = self.index(tag, hash)?;
        let rec = self.records[ri as usize];
        if self.droppable(&rec, now) {
            self.remove_index(ri);
            return None;
        }
        Some(Self::to_user(&rec))
    }

    /// Adds a user (timestamp clamped to `now`), or returns `None` if (tag, hash) exists or
    /// the directory is full.
    pub fn insert(
        &mut self,
        tag: TagId,
        hash: u32,
        host: HostId,
        timestamp: u64,
        now: u64,
    ) -> Option<User> {
        if self.records.len() >= MAX_USERS {
            return None;
        }
        self.grow_table_if_needed();
        // One probe finds an existing record or the slot the new one takes.
        let Err(slot) = self.probe(tag, hash) else {
            return None;
        };
        if self.records.len() == self.records.capacity() {
            // Grow by a quarter, not double: capacity is most of the per-user cost.
            let extra = (self.records.len() / 4).max(16);
            self.records.reserve_exact(extra);
        }
        let ri = self.records.len() as u32;
        let rec = Record {
            hash,
            timestamp: sat32(timestamp.min(now)),
            prev: NIL,
            next: NIL,
            host: host.0,
            tag_flags: tag.0 & TAG_MASK,
        };
        self.records.push(rec);
        self.changes += 1;
        self.table[slot] = ri;
        self.fingerprints[slot] = self.ideal(tag, hash).1;
        self.link_sorted(ri);
        self.count_add(host.0);
        Some(Self::to_user(&rec))
    }

    /// Refreshes a user: timestamp = max(old, min(ts, now)) and it moves to its place in
    /// expiry order (the tail for a refresh to now). Returns the updated record.
    pub fn refresh(&mut self, tag: TagId, hash: u32, timestamp: u64, now: u64) -> Option<User> {
        let ri = self.index(tag, hash)?;
        let old_ts = self.records[ri as usize].timestamp;
        let new_ts = sat32(timestamp.min(now)).max(old_ts);
        // An unchanged timestamp keeps the record's place. Relinking it would walk back from
        // the tail past every newer record: a handshake refreshing a million users that
        // mostly don't change would cost O(users) each.
        if new_ts != old_ts {
            self.changes += 1;
            self.unlink(ri);
            self.records[ri as usize].timestamp = new_ts;
            self.link_sorted(ri);
        }
        Some(Self::to_user(&self.records[ri as usize]))
    }

    /// Reassigns a user to another host (same tag).
    pub fn set_host(&mut self, tag: TagId, hash: u32, host: HostId) -> Option<User> {
        let ri = self.index(tag, hash)?;
        let old = self.records[ri as usize].host;
        if old != host.0 {
            self.changes += 1;
            self.count_sub(old);
            self.count_add(host.0);
            self.records[ri as usize].host = host.0;
        }
        Some(Self::to_user(&self.records[ri as usize]))
    }

    fn set_flag(&mut self, tag: TagId, hash: u32, flag: u16, on: bool) -> bool {
        let Some(ri) = self.index(tag, hash) else {
            return false;
        };
        let r = &mut self.records[ri as usize];
        if on {
            r.tag_flags |= flag;
        } else {
            r.tag_flags &= !flag;
        }
        true
    }

    /// Sets/clears the weak flag. Returns false if the user doesn't exist.
    pub fn set_weak(&mut self, tag: TagId, hash: u32, weak: bool) -> bool {
        self.set_flag(tag, hash, FLAG_WEAK, weak)
    }

    /// Sets/clears the "kill in progress" flag. Returns false if the user doesn't exist.
    pub fn set_killing(&mut self, tag: TagId, hash: u32, killing: bool) -> bool {
        self.set_flag(tag, hash, FLAG_KILLING, killing)
    }

    /// Removes a user.
    pub fn remove(&mut self, tag: TagId, hash: u32) -> Option<User> {
        let ri = self.index(tag, hash)?;
        Some(self.remove_index(ri))
    }

    /// Removes every user of `host` (HOST-REMOVE, HOST-FLUSH) and returns them.
    pub fn remove_host(&mut self, host: HostId) -> Vec<User> {
        let mut removed = Vec::new();
        let mut ri = 0;
        while ri < self.records.len() {
            if self.records[ri].host == host.0 {
                removed.push(self.remove_index(ri as u32));
                // The last record now sits at `ri`; look at it again.
            } else {
                ri += 1;
            }
        }
        removed
    }

    /// Users in expiry order (oldest first), without expiry checks.
    pub fn iter(&self) -> impl Iterator<Item = User> + '_ {
        let mut cur = self.head;
        std::iter::from_fn(move || {
            if cur == NIL {
                return None;
            }
            let r = &self.records[cur as usize];
            cur = r.next;
            Some(Self::to_user(r))
        })
    }

    /// Drops expired users (§3.2).
    pub fn expire(&mut self, now: u64) -> ExpireReport {
        let mut report = ExpireReport::default();
        let mut cur = self.head;
        while cur != NIL {
            let rec = self.records[cur as usize];
            if self.deadline(&rec) > now {
                break; // sorted: everything after expires later
            }
            if !self.droppable(&rec, now) {
                cur = rec.next;
                continue;
            }
            if rec.tag_flags & FLAG_WEAK != 0 {
                tracing::warn!(hash = rec.hash, "user weakness stuck, dropping the user");
                report.weak_stuck.push((rec.tag(), rec.hash));
            } else {
                report.expired += 1;
            }
            // Swap-remove moves the last record into `cur`'s slot: follow it if it was next.
            let last = (self.records.len() - 1) as u32;
            let mut next = rec.next;
            self.remove_index(cur);
            if next == last {
                next = cur;
            }
            cur = next;
        }
        report
    }

    /// When [`Self::expire`] next has work to do (`None` = nothing to expire).
    /// Users being killed don't count: their kill ends within the move timeout, after which
    /// the owner asks again.
    pub fn next_expiry(&self) -> Option<u64> {
        let mut best: Option<u64> = None;
        let mut cur = self.head;
        while cur != NIL {
            let r = &self.records[cur as usize];
            let base = self.deadline(r);
            if best.is_some_and(|b| base >= b) {
                break;
            }
            if r.tag_flags & FLAG_KILLING == 0 {
                let cand = if r.tag_flags & FLAG_WEAK != 0 {
                    base + WEAK_GRACE_SECS
                } else {
                    base
                };
                best = Some(best.map_or(cand, |b| b.min(cand)));
            }
            cur = r.next;
        }
        best
    }

    /// Checks internal invariants (tests): index ↔ records, list sorted and complete,
    /// per-host counts.
    #[doc(hidden)]
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut seen = 0usize;
        let mut cur = self.head;
        let mut prev = NIL;
        let mut last_ts = 0u32;
        while cur != NIL {
            let r = self
                .records
                .get(cur as usize)
                .ok_or("list points outside records")?;
            if r.prev != prev {
                return Err(format!("bad prev link at {cur}"));
            }
            if r.timestamp < last_ts {
                return Err("list not sorted by timestamp".into());
            }
            last_ts = r.timestamp;
            if self.index(r.tag(), r.hash) != Some(cur) {
                return Err(format!("index doesn't find record {cur}"));
            }
            seen += 1;
            if seen > self.records.len() {
                return Err("list cycle".into());
            }
            prev = cur;
            cur = r.next;
        }
        if prev != self.tail {
            return Err("tail mismatch".into());
        }
        if seen != self.records.len() {
            return Err(format!("list has {seen}, records {}", self.records.len()));
        }
        let filled = self.table.iter().filter(|&&x| x != EMPTY).count();
        if filled != self.records.len() {
            return Err("index size mismatch".into());
        }
        for (i, (&r, &f)) in self.table.iter().zip(&self.fingerprints).enumerate() {
            let expected = match self.records.get(r as usize) {
                Some(rec) => self.ideal(rec.tag(), rec.hash).1,
                None => 0,
            };
            if f != expected {
                return Err(format!("slot {i}: fingerprint {f}, expected {expected}"));
            }
        }
        let mut counts = vec![0u32; self.host_counts.len()];
        for r in &self.records {
            if let Some(c) = counts.get_mut(r.host as usize) {
                *c += 1;
            } else {
                return Err("host count missing".into());
            }
        }
        if counts != self.host_counts {
            return Err("host counts wrong".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: TagId = TagId::UNTAGGED;

    #[test]
    fn record_is_20_bytes() {
        assert_eq!(std::mem::size_of::<Record>(), 20);
    }

    #[test]
    fn insert_lookup_remove() {
        let mut d = UserDirectory::new(900);
        assert!(d.insert(T, 1, HostId(0), 100, 100).is_some());
        assert!(d.insert(T, 1, HostId(1), 100, 100).is_none());
        assert!(d.insert(TagId(1), 1, HostId(1), 100, 100).is_some());
        assert_eq!(d.peek(T, 1).map(|u| u.host), Some(HostId(0)));
        assert_eq!(d.peek(TagId(1), 1).map(|u| u.host), Some(HostId(1)));
        assert_eq!(d.user_count(HostId(0)), 1);
        assert_eq!(d.remove(T, 1).map(|u| u.hash), Some(1));
        assert_eq!(d.peek(T, 1), None);
        d.check_invariants().expect("invariants");
    }

    #[test]
    fn timestamps_are_clamped_and_only_grow() {
        let mut d = UserDirectory::new(900);
        let u = d.insert(T, 7, HostId(0), 5000, 1000).expect("insert");
        assert_eq!(u.timestamp, 1000);
        assert_eq!(d.refresh(T, 7, 500, 2000).map(|u| u.timestamp), Some(1000));
        assert_eq!(d.refresh(T, 7, 3000, 2000).map(|u| u.timestamp), Some(2000));
    }

    /// A handshake from a peer that holds the same users refreshes every one of them with
    /// the timestamp it already has: that must not walk the expiry list each time (a
    /// restarted director's rejoin into a ring of a million users never finished).
    #[test]
    fn unchanged_refreshes_keep_their_place_without_walking() {
        const N: u32 = 10_000;
        let mut d = UserDirectory::new(900);
        for hash in 1..=N {
            d.insert(T, hash, HostId(0), 1000 + u64::from(hash), 20_000);
        }
        let before: Vec<u32> = d.iter().map(|u| u.hash).collect();
        let steps = d.link_steps;
        for hash in 1..=N {
            let u = d.refresh(T, hash, 1000 + u64::from(hash), 20_000);
            assert_eq!(u.map(|u| u.timestamp), Some(1000 + hash));
        }
        for hash in 1..=N {
            d.refresh(T, hash, 500, 20_000);
        }
        assert_eq!(d.link_steps, steps);
        assert_eq!(d.iter().map(|u| u.hash).collect::<Vec<_>>(), before);
        d.check_invariants().expect("invariants");
    }

    #[test]
    fn expiry_order_and_laziness() {
        let mut d = UserDirectory::new(100);
        d.insert(T, 1, HostId(0), 10, 10);
        d.insert(T, 2, HostId(0), 20, 20);
        d.insert(T, 3, HostId(0), 5, 20); // older timestamp from the ring: sorted insert
        let order: Vec<u32> = d.iter().map(|u| u.hash).collect();
        assert_eq!(order, [3, 1, 2]);
        assert_eq!(d.next_expiry(), Some(105));
        d.refresh(T, 3, 30, 30);
        let order: Vec<u32> = d.iter().map(|u| u.hash).collect();
        assert_eq!(order, [1, 2, 3]);
        assert_eq!(d.get(T, 1, 110), None, "expired at 110");
        assert_eq!(d.expire(120).expired, 1);
        assert_eq!(d.len(), 1);
        d.check_invariants().expect("invariants");
    }

    #[test]
    fn killing_and_weak_protect() {
        let mut d = UserDirectory::new(100);
        d.insert(T, 1, HostId(0), 0, 0);
        d.insert(T, 2, HostId(0), 0, 0);
        d.insert(T, 3, HostId(0), 50, 50);
        d.set_killing(T, 1, true);
        d.set_weak(T, 2, true);
        assert_eq!(d.next_expiry(), Some(130));
        let r = d.expire(100);
        assert_eq!(r.expired, 0);
        assert_eq!(d.len(), 3);
        assert!(d.get(T, 2, 110).is_some(), "weak in grace");
        let r = d.expire(150);
        assert_eq!(r.expired, 1);
        assert_eq!(r.weak_stuck, vec![(T, 2)]);
        assert!(d.get(T, 1, 500).is_some(), "killing users never expire");
        d.set_killing(T, 1, false);
        assert_eq!(d.next_expiry(), Some(100));
        assert_eq!(d.get(T, 1, 500), None);
        d.check_invariants().expect("invariants");
    }

    #[test]
    fn predicates() {
        let d = UserDirectory::new(900);
        assert_eq!(d.near_expiry_secs(), 30);
        assert_eq!(UserDirectory::new(10).near_expiry_secs(), 3);
        assert_eq!(UserDirectory::new(100).near_expiry_secs(), 10);
        let u = User {
            hash: 1,
            tag: T,
            host: HostId(0),
            timestamp: 1000,
            weak: false,
            killing: false,
        };
        assert!(!d.is_near_expiring(&u, 1870));
        assert!(d.is_near_expiring(&u, 1871));
        assert!(d.is_recently_updated(&u, 1450));
        assert!(!d.is_recently_updated(&u, 1451));
        assert_eq!(d.expire_time(&u), 1900);
    }

    #[test]
    fn remove_host_drops_only_its_users() {
        let mut d = UserDirectory::new(900);
        for h in 0..1000u32 {
            d.insert(T, h, HostId((h % 3) as u16), u64::from(h), 5000);
        }
        let gone = d.remove_host(HostId(1));
        assert_eq!(gone.len(), 333);
        assert!(gone.iter().all(|u| u.host == HostId(1)));
        assert_eq!(d.len(), 667);
        assert_eq!(d.user_count(HostId(1)), 0);
        d.check_invariants().expect("invariants");
    }

    #[test]
    fn refs_find_their_user_after_others_moved_or_left() {
        let mut d = UserDirectory::new(900);
        for h in 0..100u32 {
            d.insert(
                T,
                h.wrapping_mul(2_654_435_761),
                HostId(1),
                1000 + u64::from(h),
                2000,
            );
        }
        let refs: Vec<UserRef> = d.refs().collect();
        assert_eq!(refs.len(), 100);
        assert!(refs
            .iter()
            .all(|r| d.peek_ref(r).is_some_and(|u| u.hash == r.hash)));
        // Removing the first users swaps the last records into their places.
        for r in &refs[..10] {
            d.remove(r.tag, r.hash);
        }
        for r in &refs[..10] {
            assert_eq!(d.peek_ref(r), None);
        }
        for r in &refs[10..] {
            let u = d.peek_ref(r).expect("still there");
            assert_eq!((u.tag, u.hash), (r.tag, r.hash));
        }
        d.check_invariants().expect("invariants");
    }

    #[test]
    fn the_index_stays_whole_through_growth_and_backward_shift_deletion() {
        let mut d = UserDirectory::new(900);
        let mut present = std::collections::HashSet::new();
        // Hashes that crowd a few probe runs, so deletions shift neighbours back.
        let hashes: Vec<u32> = (0..5_000u32).map(|i| i.wrapping_mul(7) << 3).collect();
        for (i, h) in hashes.iter().enumerate() {
            assert!(d.insert(T, *h, HostId(1), 1000, 1000).is_some());
            assert!(
                d.insert(T, *h, HostId(1), 1000, 1000).is_none(),
                "a second insert"
            );
            present.insert(*h);
            if i % 7 == 0 {
                d.remove(T, hashes[i / 2]);
                present.remove(&hashes[i / 2]);
            }
        }
        d.check_invariants().expect("invariants");
        for h in &hashes {
            assert_eq!(d.peek(T, *h).is_some(), present.contains(h), "{h}");
        }
        assert_eq!(d.len(), present.len());
    }

    /// Memory target: ≤ 40 bytes per user including the index, at 1 M users.
    #[test]
    fn one_million_users_fit_in_40_bytes_each() {
        let mut d = UserDirectory::new(900);
        let n = 1_000_000u32;
        for i in 0..n {
            let hash = i.wrapping_mul(2_654_435_761);
            d.insert(T, hash, HostId((i % 100) as u16), 1000, 1000);
        }
        assert_eq!(d.len(), n as usize);
        let per_user = d.heap_bytes() as f64 / f64::from(n);
        println!("user directory: {per_user:.1} bytes/user at {n} users");
        assert!(per_user <= 40.0, "{per_user} bytes/user");
    }
}
