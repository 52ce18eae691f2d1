//! What `load` writes: items of a single-table design keyed by `pk` and
//! `sk`, and the next operation on them.
//!
//! Three kinds of entity share the table, as in a single-table design:
//! order lines (`ORDER#…` / `LINE#0001`), customer profiles (`CUSTOMER#…` /
//! `PROFILE`) and device events (`DEVICE#…` / `EVENT#…`). Their attributes
//! come from the capture generator's profiles, so they cover every
//! DynamoDB type (numbers beyond i64, 38-digit decimals, 1E-130 and
//! 9.99…E+125 among them) and nest several levels deep; carts, trial
//! accounts and events carry a TTL (`expires_at`, epoch seconds).
//!
//! Each writer lane owns an [`Items`]: its own seeded random source and the
//! items it created, so lanes never touch each other's keys and need no
//! locking. State changes when an operation is planned; the lane forgets an
//! item whose write was refused, since its stored state is then unknown.

use dynamo_cdc_core::{AttributeValue, Item};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::generator::{Profile, modify_item, new_item};

/// The TTL attribute: epoch seconds.
pub(crate) const TTL_ATTRIBUTE: &str = "expires_at";
/// The partition key (S).
pub(crate) const HASH_KEY: &str = "pk";
/// The sort key (S).
pub(crate) const RANGE_KEY: &str = "sk";

/// What a write does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// PutItem of a new key: an INSERT record.
    Insert,
    /// PutItem over an existing key: a MODIFY record.
    Replace,
    /// UpdateItem of some attributes: a MODIFY record.
    Update,
    /// DeleteItem: a REMOVE record.
    Delete,
}

impl Kind {
    pub(crate) const ALL: [Kind; 4] = [Kind::Insert, Kind::Replace, Kind::Update, Kind::Delete];

    /// Plural noun for reports.
    pub(crate) fn plural(self) -> &'static str {
        match self {
            Kind::Insert => "inserts",
            Kind::Replace => "replaces",
            Kind::Update => "updates",
            Kind::Delete => "deletes",
        }
    }
}

/// One planned write.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Op {
    /// PutItem of a whole item (keys included); `Kind::Insert` or
    /// `Kind::Replace`.
    Put { kind: Kind, item: Item },
    /// UpdateItem turning `old` into `new` (both whole items).
    Update { keys: Item, old: Item, new: Item },
    /// DeleteItem.
    Delete { keys: Item },
}

impl Op {
    pub(crate) fn kind(&self) -> Kind {
        match self {
            Op::Put { kind, .. } => *kind,
            Op::Update { .. } => Kind::Update,
            Op::Delete { .. } => Kind::Delete,
        }
    }

    /// The item's key attributes.
    pub(crate) fn keys(&self) -> Item {
        match self {
            Op::Put { item, .. } => keys_of(item),
            Op::Update { keys, .. } | Op::Delete { keys } => keys.clone(),
        }
    }
}

fn keys_of(item: &Item) -> Item {
    let mut keys = Item::new();
    for name in [HASH_KEY, RANGE_KEY] {
        if let Some(v) = item.get(name) {
            keys.insert(name.into(), v.clone());
        }
    }
    keys
}

/// Relative weights of the operations once items exist. Updates dominate
/// as in most applications; deletes are rarer than inserts, so the table
/// grows slowly.
const MIX: [(Kind, u32); 4] = [
    (Kind::Insert, 40),
    (Kind::Replace, 15),
    (Kind::Update, 35),
    (Kind::Delete, 10),
];

/// An entity of the single-table design.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entity {
    OrderLine,
    Customer,
    Event,
}

impl Entity {
    fn profile(self) -> Profile {
        match self {
            Entity::OrderLine => Profile::Orders,
            Entity::Customer => Profile::Customers,
            Entity::Event => Profile::Events,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Entity::OrderLine => "order_line",
            Entity::Customer => "customer",
            Entity::Event => "event",
        }
    }
}

struct Live {
    entity: Entity,
    image: Item,
}

/// An order still getting lines, a device still sending events.
struct Group {
    pk: String,
    entity: Entity,
    next: u32,
}

/// One lane's items and random source.
pub(crate) struct Items {
    rng: StdRng,
    live: Vec<Live>,
    max_live: usize,
    group: Option<Group>,
}

impl Items {
    /// `max_live` bounds memory: past it, a random tracked item is
    /// forgotten (it stays in the table, untouched).
    pub(crate) fn new(seed: u64, max_live: usize) -> Self {
        Items {
            rng: StdRng::seed_from_u64(seed),
            live: Vec::new(),
            max_live: max_live.max(1),
            group: None,
        }
    }

    /// Random numbers for the caller's own choices (backoff jitter).
    pub(crate) fn rng(&mut self) -> &mut StdRng {
        &mut self.rng
    }

    /// Plans the next write at wall-clock `now_ms` and applies it to the
    /// tracked state.
    pub(crate) fn next(&mut self, now_ms: u64) -> Op {
        let kind = self.choose_kind();
        match kind {
            Kind::Insert => {
                let (entity, pk, sk) = self.new_keys(now_ms);
                let mut item =
                    new_item(entity.profile(), &mut self.rng, now_ms, Some(TTL_ATTRIBUTE));
                item.insert("entity".into(), AttributeValue::S(entity.name().into()));
                item.insert(HASH_KEY.into(), AttributeValue::S(pk.into()));
                item.insert(RANGE_KEY.into(), AttributeValue::S(sk.into()));
                if self.live.len() >= self.max_live {
                    let forget = self.rng.random_range(0..self.live.len());
                    self.live.swap_remove(forget);
                }
                self.live.push(Live {
                    entity,
                    image: item.clone(),
                });
                Op::Put { kind, item }
            }
            Kind::Replace | Kind::Update => {
                let at = self.rng.random_range(0..self.live.len());
                let live = &mut self.live[at];
                let old = live.image.clone();
                let keys = keys_of(&old);
                modify_item(
                    live.entity.profile(),
                    &mut self.rng,
                    &mut live.image,
                    now_ms,
                    Some(TTL_ATTRIBUTE),
                );
                // Profiles never touch the keys, but the image must hold
                // them whatever a profile does.
                for (k, v) in keys.iter() {
                    live.image.insert(k.clone(), v.clone());
                }
                let new = live.image.clone();
                if kind == Kind::Replace {
                    Op::Put { kind, item: new }
                } else {
                    Op::Update { keys, old, new }
                }
            }
            Kind::Delete => {
                let at = self.rng.random_range(0..self.live.len());
                let gone = self.live.swap_remove(at);
                Op::Delete {
                    keys: keys_of(&gone.image),
                }
            }
        }
    }

    /// Stops tracking an item whose stored state is no longer known.
    pub(crate) fn forget(&mut self, keys: &Item) {
        if let Some(at) = self
            .live
            .iter()
            .position(|l| keys.iter().all(|(k, v)| l.image.get(k) == Some(v)))
        {
            self.live.swap_remove(at);
        }
    }

    fn choose_kind(&mut self) -> Kind {
        if self.live.is_empty() {
            return Kind::Insert;
        }
        let total: u32 = MIX.iter().map(|(_, w)| w).sum();
        let mut roll = self.rng.random_range(0..total);
        for (kind, weight) in MIX {
            if roll < weight {
                return kind;
            }
            roll -= weight;
        }
        Kind::Insert
    }

    /// Keys of a new item: half the time the next line of the current order
    /// or the next event of the current device, so partitions hold several
    /// items; otherwise a new partition.
    fn new_keys(&mut self, now_ms: u64) -> (Entity, String, String) {
        if let Some(g) = self.group.as_mut()
            && g.next <= 20
            && self.rng.random_bool(0.5)
        {
            let n = g.next;
            g.next += 1;
            let sk = match g.entity {
                Entity::Event => format!("EVENT#{now_ms}#{n:04}"),
                _ => format!("LINE#{n:04}"),
            };
            return (g.entity, g.pk.clone(), sk);
        }
        // Random 64-bit ids: distinct across lanes and runs (with
        // different seeds) without coordination.
        let id: u64 = self.rng.random();
        let entity = match self.rng.random_range(0..10) {
            0..5 => Entity::OrderLine,
            5..8 => Entity::Customer,
            _ => Entity::Event,
        };
        let (pk, sk) = match entity {
            Entity::OrderLine => (format!("ORDER#{id:016x}"), "LINE#0001".to_owned()),
            Entity::Customer => (format!("CUSTOMER#{id:016x}"), "PROFILE".to_owned()),
            Entity::Event => (format!("DEVICE#{id:016x}"), format!("EVENT#{now_ms}#0001")),
        };
        self.group = (entity != Entity::Customer).then(|| Group {
            pk: pk.clone(),
            entity,
            next: 2,
        });
        (entity, pk, sk)
    }
}

/// DynamoDB's item size limit.
#[cfg(test)]
const MAX_ITEM_BYTES: usize = 400 * 1024;

/// Why `item` would be refused by DynamoDB, if it would: an empty or
/// repeated set member, a map nested deeper than 32 levels, an empty
/// attribute name, a key that is not a non-empty string, or more than
/// 400 KB. Numbers are valid by construction ([`dynamo_cdc_core::Number`]
/// checks digits and range). The tests run it over many generated items.
#[cfg(test)]
fn invalid(item: &Item) -> Option<String> {
    for key in [HASH_KEY, RANGE_KEY] {
        match item.get(key) {
            Some(AttributeValue::S(s)) if !s.is_empty() && s.len() <= 1024 => {}
            other => return Some(format!("key `{key}` is {other:?}")),
        }
    }
    let mut size = 0;
    for (name, value) in item.iter() {
        if name.is_empty() {
            return Some("an attribute has an empty name".to_owned());
        }
        match value_size(value, 1) {
            Ok(n) => size += name.len() + n,
            Err(e) => return Some(format!("`{name}`: {e}")),
        }
    }
    (size > MAX_ITEM_BYTES).then(|| format!("{size} bytes, over DynamoDB's 400 KB"))
}

/// An upper bound of a value's stored size, or why it is invalid.
#[cfg(test)]
fn value_size(value: &AttributeValue, depth: usize) -> Result<usize, String> {
    fn distinct<T: PartialEq>(members: &[T]) -> bool {
        members
            .iter()
            .enumerate()
            .all(|(i, m)| !members[..i].contains(m))
    }
    Ok(match value {
        AttributeValue::S(s) => s.len(),
        // A number's text is longer than its stored form.
        AttributeValue::N(n) => n.as_str().len(),
        AttributeValue::B(b) => b.len(),
        AttributeValue::Bool(_) | AttributeValue::Null => 1,
        AttributeValue::Ss(v) if v.is_empty() || !distinct(v) => {
            return Err("empty or repeated string set".to_owned());
        }
        AttributeValue::Ns(v) if v.is_empty() || !distinct(v) => {
            return Err("empty or repeated number set".to_owned());
        }
        AttributeValue::Bs(v) if v.is_empty() || !distinct(v) => {
            return Err("empty or repeated binary set".to_owned());
        }
        AttributeValue::Ss(v) => v.iter().map(String::len).sum(),
        AttributeValue::Ns(v) => v.iter().map(|n| n.as_str().len()).sum(),
        AttributeValue::Bs(v) => v.iter().map(Vec::len).sum(),
        AttributeValue::L(_) | AttributeValue::M(_) if depth > 32 => {
            return Err("nested deeper than 32 levels".to_owned());
        }
        AttributeValue::L(v) => {
            let mut size = 3;
            for e in v {
                size += 1 + value_size(e, depth + 1)?;
            }
            size
        }
        AttributeValue::M(m) => {
            let mut size = 3;
            for (k, e) in m.iter() {
                size += 1 + k.len() + value_size(e, depth + 1)?;
            }
            size
        }
        AttributeValue::Nested(text) => value_size(&text.tree(), depth)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(item: &Item, out: &mut std::collections::BTreeSet<&'static str>) {
        for (_, v) in item.iter() {
            out.insert(v.tag());
            match v {
                AttributeValue::M(m) => tags(m, out),
                AttributeValue::L(l) => {
                    for e in l {
                        out.insert(e.tag());
                    }
                }
                _ => {}
            }
        }
    }

    #[test]
    fn items_are_valid_and_use_every_type() {
        let mut items = Items::new(7, 500);
        let mut seen = std::collections::BTreeSet::new();
        let mut kinds = std::collections::BTreeMap::new();
        let mut ttl = 0;
        let mut now_ms = 1_760_000_000_000;
        for _ in 0..5_000 {
            now_ms += 20;
            let op = items.next(now_ms);
            *kinds.entry(op.kind().plural()).or_insert(0) += 1;
            let (Op::Put { item, .. } | Op::Update { new: item, .. }) = &op else {
                continue;
            };
            assert_eq!(invalid(item), None, "{item:?}");
            tags(item, &mut seen);
            ttl += usize::from(item.contains_key(TTL_ATTRIBUTE));
        }
        let all = ["S", "N", "B", "BOOL", "NULL", "SS", "NS", "BS", "L", "M"];
        assert!(all.iter().all(|t| seen.contains(t)), "{seen:?}");
        assert_eq!(kinds.len(), 4, "{kinds:?}");
        assert!(ttl > 100, "{ttl} items with a TTL");
    }

    #[test]
    fn same_seed_same_operations() {
        let run = |seed| {
            let mut items = Items::new(seed, 100);
            (0..300).map(|i| items.next(i)).collect::<Vec<_>>()
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4));
    }

    #[test]
    fn updates_follow_the_tracked_state_and_deletes_forget() {
        let mut items = Items::new(11, 1_000);
        let mut state = std::collections::HashMap::new();
        let key = |i: &Item| format!("{:?}", keys_of(i));
        for i in 0..3_000 {
            match items.next(i) {
                Op::Put { kind, item } => {
                    let before = state.insert(key(&item), item);
                    assert_eq!(before.is_some(), kind == Kind::Replace);
                }
                Op::Update { keys, old, new } => {
                    assert_eq!(state.get(&key(&keys)), Some(&old));
                    assert_ne!(old, new);
                    state.insert(key(&keys), new);
                }
                Op::Delete { keys } => {
                    assert!(state.remove(&key(&keys)).is_some());
                }
            }
        }
    }

    #[test]
    fn oversized_and_empty_sets_are_caught() {
        let mut item = Item::new();
        item.insert(HASH_KEY.into(), AttributeValue::S("a".into()));
        item.insert(RANGE_KEY.into(), AttributeValue::S("b".into()));
        assert_eq!(invalid(&item), None);
        item.insert("s".into(), AttributeValue::Ss(Vec::new()));
        assert!(invalid(&item).is_some());
        item.insert("s".into(), AttributeValue::B(vec![0; MAX_ITEM_BYTES]));
        assert!(invalid(&item).is_some());
    }
}
