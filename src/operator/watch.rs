//! Watch: the controller's watches, and the one driver that turns their events into index
//! updates.
//!
//! Policies are watched per namespace of `--namespaces` (or cluster-wide), ConfigMaps by the
//! two labels of [`ConfigMapWatch`], and the gateway replicas' report Leases by their label
//! ([`GATEWAY_REPLICA_LABEL`]). Every watch goes through [`drive`], which applies a
//! kube-runtime watcher event as its reflector does: `Init` starts a new list, `InitApply` and
//! `Apply` apply, `Delete` deletes, and `InitDone` deletes what the index knows from that watch
//! but the new list lacks (deleted while the watch was away, e.g. after a 410 Gone).

use std::collections::{HashMap, HashSet};
use std::hash::Hash;

use futures::stream::{BoxStream, SelectAll};
use futures::{Stream, StreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};

use crate::key::{PolicyKey, TargetKey};
use crate::operator::boundary::Boundary;
use crate::operator::decode::WatchedPolicy;
use crate::operator::served::ReplicaKey;
use crate::serving::GATEWAY_REPLICA_LABEL;
use crate::target::configmap::ConfigMapWatch;

/// Which watch an event came from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum WatchSource {
    /// The policy watch of one namespace, or of all (`None`).
    Policies(Option<String>),
    /// One of the label-selected ConfigMap watches.
    ConfigMaps(ConfigMapWatch),
    /// The gateway replicas' report Leases, in every namespace.
    Reports,
}

/// An event of either kind of watch.
pub enum WatchEvent {
    /// From a policy watch.
    Policy(Box<Event<WatchedPolicy>>),
    /// From a ConfigMap watch.
    ConfigMap(Box<Event<ConfigMap>>),
    /// From the report Lease watch.
    Report(Box<Event<Lease>>),
}

/// An event, or a watch error, with the watch it came from.
pub type Tagged = (WatchSource, Result<WatchEvent, watcher::Error>);

fn tagged<S, K: 'static>(
    source: WatchSource,
    stream: S,
    wrap: fn(Box<Event<K>>) -> WatchEvent,
) -> BoxStream<'static, Tagged>
where
    S: Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static,
{
    stream.map(move |r| (source.clone(), r.map(|e| wrap(Box::new(e))))).boxed()
}

/// Every watch of an instance acting in `boundary`, merged. Lists come from the API server's
/// watch cache, paginated (500 a page), so memory stays bounded while thousands of policies
/// are listed; objects are reduced as they arrive.
pub fn streams(client: &Client, boundary: &Boundary) -> SelectAll<BoxStream<'static, Tagged>> {
    let config = watcher::Config::default();
    let mut streams = SelectAll::new();
    let namespaces: Vec<Option<String>> = match boundary.namespaces() {
        // Only the namespaces of --namespaces are read, each by its own watch.
        Some(namespaces) => namespaces.iter().cloned().map(Some).collect(),
        None => vec![None],
    };
    for namespace in namespaces {
        let api: Api<WatchedPolicy> = match &namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        let events = watcher::watcher(api, config.clone()).default_backoff();
        streams.push(tagged(WatchSource::Policies(namespace), events, WatchEvent::Policy));
    }
    for watch in ConfigMapWatch::ALL {
        let api: Api<ConfigMap> = Api::all(client.clone());
        let events = watcher::watcher(api, config.clone().labels(&watch.label_selector())).default_backoff();
        streams.push(tagged(WatchSource::ConfigMaps(watch), events, WatchEvent::ConfigMap));
    }
    let leases: Api<Lease> = Api::all(client.clone());
    let events = watcher::watcher(leases, config.labels(&format!("{GATEWAY_REPLICA_LABEL}=true"))).default_backoff();
    streams.push(tagged(WatchSource::Reports, events, WatchEvent::Report));
    streams
}

/// What each watch has listed since its last `Init`, and which watches have listed once.
#[derive(Default)]
pub struct Relists {
    policies: HashMap<WatchSource, HashSet<PolicyKey>>,
    configmaps: HashMap<WatchSource, HashSet<TargetKey>>,
    reports: HashSet<ReplicaKey>,
    done: HashSet<WatchSource>,
}

impl Relists {
    /// The listing in progress of a policy watch.
    pub fn policies(&mut self, source: &WatchSource) -> &mut HashSet<PolicyKey> {
        self.policies.entry(source.clone()).or_default()
    }

    /// The listing in progress of a ConfigMap watch.
    pub fn configmaps(&mut self, source: &WatchSource) -> &mut HashSet<TargetKey> {
        self.configmaps.entry(source.clone()).or_default()
    }

    /// The listing in progress of the report watch.
    pub fn reports(&mut self) -> &mut HashSet<ReplicaKey> {
        &mut self.reports
    }

    /// `source` has delivered a complete list.
    pub fn listed(&mut self, source: WatchSource) {
        self.done.insert(source);
    }

    /// How many watches have delivered a complete list at least once.
    pub fn listed_count(&self) -> usize {
        self.done.len()
    }
}

/// What the index does with one watch's objects.
pub struct Sink<'a, T, K> {
    /// The key of an object.
    pub key_of: fn(&T) -> K,
    /// An object was added or changed.
    pub apply: &'a dyn Fn(T),
    /// An object is gone.
    pub delete: &'a dyn Fn(K),
    /// What the index knows from this watch (to find what a new list lacks).
    pub known: &'a dyn Fn() -> Vec<K>,
}

/// Applies one watcher event; `listing` holds what the current list has shown. Returns true
/// when the event completed a list.
pub fn drive<T, K: Eq + Hash>(event: Event<T>, listing: &mut HashSet<K>, sink: Sink<'_, T, K>) -> bool {
    match event {
        Event::Init => listing.clear(),
        Event::InitApply(object) => {
            listing.insert((sink.key_of)(&object));
            (sink.apply)(object);
        }
        Event::Apply(object) => (sink.apply)(object),
        Event::Delete(object) => (sink.delete)((sink.key_of)(&object)),
        Event::InitDone => {
            let seen = std::mem::take(listing);
            for gone in (sink.known)().into_iter().filter(|k| !seen.contains(k)) {
                (sink.delete)(gone);
            }
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    #[test]
    fn a_relist_deletes_what_the_new_list_lacks_and_applies_the_rest() {
        let index = RefCell::new(vec!["a", "b", "c"]);
        let applied = RefCell::new(Vec::new());
        let apply = |s: &str| applied.borrow_mut().push(s.to_string());
        let delete = |k: String| index.borrow_mut().retain(|s| *s != k);
        let known = || index.borrow().iter().map(|s| s.to_string()).collect();
        let sink = || Sink { key_of: |s: &&str| s.to_string(), apply: &apply, delete: &delete, known: &known };
        let mut listing = HashSet::new();
        assert!(!drive(Event::Init, &mut listing, sink()));
        assert!(!drive(Event::InitApply("a"), &mut listing, sink()));
        assert!(!drive(Event::InitApply("c"), &mut listing, sink()));
        assert!(drive(Event::InitDone, &mut listing, sink()), "a list is complete");
        assert_eq!(*index.borrow(), ["a", "c"], "b was deleted while the watch was away");
        assert_eq!(*applied.borrow(), ["a", "c"]);
        assert!(listing.is_empty());
        drive(Event::Delete("a"), &mut listing, sink());
        assert_eq!(*index.borrow(), ["c"]);
    }
}
