//! Which due poll starts next, so that noisy neighbours stay in their lane.
//!
//! Due polls wait in groups — the object's namespace and the sources its last poll called — and
//! start in turns, one group after another, while the group's namespace and each of its sources
//! have fewer polls running than their caps. A source that hangs until its timeout (or a tenant
//! with thousands of slow objects) thus holds at most its cap of the controller's cycle slots;
//! the polls of every other group keep starting on time, and the slow group's own polls wait
//! unstarted and show their own lag. A poll waiting here holds nothing: no slot, no task.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::Arc;

/// Where a due poll waits: its object's namespace and the sources its last poll called
/// (sorted, each once; none before its first poll). `S` identifies a source
/// ([`ringscale_scalers::SourceId`] in the controller).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Group<S> {
    pub namespace: Arc<str>,
    pub sources: Arc<[S]>,
}

impl<S: Ord> Group<S> {
    pub(crate) fn new(namespace: Arc<str>, mut sources: Vec<S>) -> Self {
        sources.sort_unstable();
        sources.dedup();
        Group {
            namespace,
            sources: sources.into(),
        }
    }

    /// The same namespace with `sources`; no allocation when they are the ones it has.
    pub(crate) fn with_sources(&self, mut sources: Vec<S>) -> Self {
        sources.sort_unstable();
        sources.dedup();
        Group {
            namespace: Arc::clone(&self.namespace),
            sources: if *self.sources == *sources {
                Arc::clone(&self.sources)
            } else {
                sources.into()
            },
        }
    }
}

/// Caps of polls running at once.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Caps {
    /// Per namespace.
    pub namespace: usize,
    /// Per source.
    pub source: usize,
}

/// Due polls in groups, started in turns within the caps.
#[derive(Debug)]
pub(crate) struct Dispatch<T, S> {
    caps: Caps,
    queues: HashMap<Group<S>, VecDeque<T>>,
    /// The groups with waiting polls, in the order of their turns.
    turns: VecDeque<Group<S>>,
    running_in: HashMap<Arc<str>, usize>,
    running_on: HashMap<S, usize>,
}

impl<T, S: Copy + Eq + Hash> Dispatch<T, S> {
    pub(crate) fn new(caps: Caps) -> Self {
        Dispatch {
            caps: Caps {
                namespace: caps.namespace.max(1),
                source: caps.source.max(1),
            },
            queues: HashMap::new(),
            turns: VecDeque::new(),
            running_in: HashMap::new(),
            running_on: HashMap::new(),
        }
    }

    /// Queues a due poll.
    pub(crate) fn push(&mut self, group: Group<S>, item: T) {
        let queue = self.queues.entry(group.clone()).or_default();
        if queue.is_empty() {
            self.turns.push_back(group);
        }
        queue.push_back(item);
    }

    /// Whether no poll waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.turns.is_empty()
    }

    /// The next poll to start: the first group in turn whose namespace and sources are all
    /// under their caps gives its oldest poll and goes to the back of the turns. The caller
    /// starts it and reports [`Dispatch::started`], or drops it (nothing counted). `None` when
    /// every waiting group is at a cap.
    pub(crate) fn pop(&mut self) -> Option<(T, Group<S>)> {
        for _ in 0..self.turns.len() {
            let group = self.turns.pop_front()?;
            if !self.has_room(&group) {
                self.turns.push_back(group);
                continue;
            }
            let Some(queue) = self.queues.get_mut(&group) else {
                continue;
            };
            let item = queue.pop_front();
            if queue.is_empty() {
                self.queues.remove(&group);
            } else {
                self.turns.push_back(group.clone());
            }
            if let Some(item) = item {
                return Some((item, group));
            }
        }
        None
    }

    fn has_room(&self, group: &Group<S>) -> bool {
        self.running_in
            .get(&group.namespace)
            .is_none_or(|n| *n < self.caps.namespace)
            && group
                .sources
                .iter()
                .all(|s| self.running_on.get(s).is_none_or(|n| *n < self.caps.source))
    }

    /// A poll of `group` started.
    pub(crate) fn started(&mut self, group: &Group<S>) {
        *self
            .running_in
            .entry(Arc::clone(&group.namespace))
            .or_default() += 1;
        for s in group.sources.iter() {
            *self.running_on.entry(*s).or_default() += 1;
        }
    }

    /// A poll of `group` ended.
    pub(crate) fn finished(&mut self, group: &Group<S>) {
        if let Some(n) = self.running_in.get_mut(&group.namespace) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.running_in.remove(&group.namespace);
            }
        }
        for s in group.sources.iter() {
            if let Some(n) = self.running_on.get_mut(s) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.running_on.remove(s);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources() -> (u64, u64) {
        (1, 2)
    }

    #[test]
    fn a_saturated_source_waits_while_the_others_start_in_turns() {
        let (slow, fast) = sources();
        let caps = Caps {
            namespace: 100,
            source: 3,
        };
        let mut d = Dispatch::new(caps);
        let slow_group = Group::new("tenant-a".into(), vec![slow]);
        let fast_group = Group::new("tenant-b".into(), vec![fast]);
        for i in 0..10 {
            d.push(slow_group.clone(), format!("slow-{i}"));
        }
        for i in 0..10 {
            d.push(fast_group.clone(), format!("fast-{i}"));
        }
        // Turns alternate while both sources have room: three each.
        let mut order = Vec::new();
        while let Some((item, group)) = d.pop() {
            d.started(&group);
            order.push(item);
        }
        assert_eq!(
            order,
            ["slow-0", "fast-0", "slow-1", "fast-1", "slow-2", "fast-2"]
        );
        // The slow polls hang; fast ones keep ending, and each end starts the next fast poll
        // at once: the slow group, at its cap, is passed over, whatever waits in it.
        for i in 3..10 {
            d.finished(&fast_group);
            let (item, group) = d.pop().expect("the fast source has room");
            assert_eq!(item, format!("fast-{i}"));
            d.started(&group);
            assert!(d.pop().is_none(), "the slow source is at its cap");
        }
        // One slow poll ends: one more slow one starts, no more.
        d.finished(&slow_group);
        let (item, group) = d.pop().expect("a slow slot is free");
        assert_eq!(item, "slow-3");
        d.started(&group);
        assert!(d.pop().is_none());
        assert!(!d.is_empty(), "six slow polls wait");
    }

    #[test]
    fn a_namespace_holds_at_most_its_cap_whatever_its_sources() {
        let (a, b) = sources();
        let mut d = Dispatch::new(Caps {
            namespace: 2,
            source: 100,
        });
        d.push(Group::new("noisy".into(), vec![a]), 1);
        d.push(Group::new("noisy".into(), vec![b]), 2);
        d.push(Group::new("noisy".into(), vec![a, b]), 3);
        d.push(Group::new("quiet".into(), vec![a]), 4);
        let mut started = Vec::new();
        while let Some((item, group)) = d.pop() {
            d.started(&group);
            started.push(item);
        }
        assert_eq!(
            started,
            [1, 2, 4],
            "the third noisy poll waits for its namespace"
        );
        d.finished(&Group::new("noisy".into(), vec![b]));
        assert_eq!(d.pop().map(|(item, _)| item), Some(3));
    }

    #[test]
    fn a_poll_of_several_sources_needs_room_on_each_and_counts_on_each() {
        let (a, b) = sources();
        let mut d = Dispatch::new(Caps {
            namespace: 100,
            source: 1,
        });
        let both = Group::new("ns".into(), vec![b, a, a]);
        assert_eq!(&*both.sources, &[a, b], "sorted, once each");
        d.push(both.clone(), "both");
        d.push(Group::new("ns".into(), vec![a]), "a");
        d.push(Group::new("ns".into(), vec![b]), "b");
        let (item, group) = d.pop().unwrap();
        assert_eq!(item, "both");
        d.started(&group);
        assert!(d.pop().is_none(), "a and b are both at their cap");
        d.finished(&both);
        let mut rest: Vec<&str> = Vec::new();
        while let Some((item, group)) = d.pop() {
            d.started(&group);
            rest.push(item);
        }
        assert_eq!(rest, ["a", "b"]);
        assert!(d.is_empty());
    }

    #[test]
    fn a_group_with_the_same_sources_shares_them() {
        let g = Group::new("ns".into(), vec![2u64, 1]);
        let same = g.with_sources(vec![1, 2, 1]);
        assert_eq!(same, g);
        assert!(
            Arc::ptr_eq(&same.sources, &g.sources),
            "not allocated again"
        );
        let other = g.with_sources(vec![3]);
        assert_eq!(&*other.sources, &[3]);
        assert!(Arc::ptr_eq(&other.namespace, &g.namespace));
    }

    #[test]
    fn an_object_not_polled_yet_waits_only_for_its_namespace() {
        let mut d = Dispatch::new(Caps {
            namespace: 1,
            source: 1,
        });
        let new = Group::<u64>::new("ns".into(), Vec::new());
        d.push(new.clone(), 1);
        d.push(new.clone(), 2);
        let (_, g) = d.pop().unwrap();
        d.started(&g);
        assert!(d.pop().is_none());
        d.finished(&g);
        assert_eq!(d.pop().map(|(i, _)| i), Some(2));
    }
}
