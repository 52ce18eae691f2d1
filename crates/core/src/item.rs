//! [`Item`]: an item, image or map, as attribute name to value.
//!
//! Entries live in one vector sorted by name. Items are built once per change
//! and read front to back (schema inference, row building, encoding), so a
//! sorted vector beats a tree: one allocation, no node traversal, lookups by
//! binary search, and dropping it is a linear walk.

use std::fmt;
use std::ops::Index;

use crate::attribute::AttributeValue;
use crate::text::Text;

/// Attribute name to value, in name order, each name once.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Item {
    entries: Vec<(Text, AttributeValue)>,
}

impl Item {
    /// An empty item.
    pub fn new() -> Self {
        Item::default()
    }

    /// Builds an item from entries already in strictly ascending name order
    /// (so distinct), as a parser that compared each name with the one
    /// before it as it went knows them to be: checking them again after
    /// they moved cost more than comparing them while they were at hand.
    ///
    /// # Panics
    /// In debug builds, when they are not in that order.
    pub fn from_ascending_entries(entries: Vec<(Text, AttributeValue)>) -> Self {
        debug_assert!(
            entries.windows(2).all(|w| w[0].0 < w[1].0),
            "entries out of order"
        );
        Item { entries }
    }

    /// Builds an item from entries in any order, or returns the first name
    /// that occurs twice.
    ///
    /// # Errors
    /// The duplicated name.
    pub fn from_entries(mut entries: Vec<(Text, AttributeValue)>) -> Result<Self, Text> {
        // Strictly ascending names are sorted and distinct: one pass of
        // comparisons, where sorting then checking would take two.
        if entries.windows(2).all(|w| w[0].0 < w[1].0) {
            return Ok(Item { entries });
        }
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        if let Some(w) = entries.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(w[0].0.clone());
        }
        Ok(Item { entries })
    }

    /// How many attributes.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are no attributes.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn find(&self, name: &str) -> Result<usize, usize> {
        self.entries.binary_search_by(|(k, _)| k.as_str().cmp(name))
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&AttributeValue> {
        self.find(name).ok().map(|i| &self.entries[i].1)
    }

    /// The value of `name`, to change in place.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut AttributeValue> {
        self.find(name).ok().map(|i| &mut self.entries[i].1)
    }

    /// True when `name` is present.
    pub fn contains_key(&self, name: &str) -> bool {
        self.find(name).is_ok()
    }

    /// Sets `name` to `value`, returning the value it replaces.
    pub fn insert(&mut self, name: Text, value: AttributeValue) -> Option<AttributeValue> {
        match self.find(&name) {
            Ok(i) => Some(std::mem::replace(&mut self.entries[i].1, value)),
            Err(i) => {
                self.entries.insert(i, (name, value));
                None
            }
        }
    }

    /// Removes `name`, returning its value.
    pub fn remove(&mut self, name: &str) -> Option<AttributeValue> {
        self.find(name).ok().map(|i| self.entries.remove(i).1)
    }

    /// The attributes in name order.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            inner: self.entries.iter(),
        }
    }

    /// The names in order.
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &Text> + ExactSizeIterator {
        self.entries.iter().map(|(k, _)| k)
    }

    /// The values in name order.
    pub fn values(&self) -> impl DoubleEndedIterator<Item = &AttributeValue> + ExactSizeIterator {
        self.entries.iter().map(|(_, v)| v)
    }
}

/// The attributes of an [`Item`] in name order.
#[derive(Clone, Debug)]
pub struct Iter<'a> {
    inner: std::slice::Iter<'a, (Text, AttributeValue)>,
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a Text, &'a AttributeValue);

    fn next(&mut self) -> Option<Self::Item> {
        self.inner.next().map(|(k, v)| (k, v))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl DoubleEndedIterator for Iter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.inner.next_back().map(|(k, v)| (k, v))
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl<'a> IntoIterator for &'a Item {
    type Item = (&'a Text, &'a AttributeValue);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl IntoIterator for Item {
    type Item = (Text, AttributeValue);
    type IntoIter = std::vec::IntoIter<(Text, AttributeValue)>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

/// Like a map: a later entry for the same name replaces an earlier one.
impl<K: Into<Text>> FromIterator<(K, AttributeValue)> for Item {
    fn from_iter<I: IntoIterator<Item = (K, AttributeValue)>>(iter: I) -> Self {
        let mut entries: Vec<(Text, AttributeValue)> =
            iter.into_iter().map(|(k, v)| (k.into(), v)).collect();
        // Stable, so equal names keep their order and the last one wins.
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out: Vec<(Text, AttributeValue)> = Vec::with_capacity(entries.len());
        for entry in entries {
            match out.last_mut() {
                Some(last) if last.0 == entry.0 => *last = entry,
                _ => out.push(entry),
            }
        }
        Item { entries: out }
    }
}

impl<K: Into<Text>> Extend<(K, AttributeValue)> for Item {
    fn extend<I: IntoIterator<Item = (K, AttributeValue)>>(&mut self, iter: I) {
        for (k, v) in iter {
            self.insert(k.into(), v);
        }
    }
}

impl<K: Into<Text>, const N: usize> From<[(K, AttributeValue); N]> for Item {
    fn from(entries: [(K, AttributeValue); N]) -> Self {
        entries.into_iter().collect()
    }
}

impl Index<&str> for Item {
    type Output = AttributeValue;

    /// # Panics
    /// When `name` is absent, like a map's index.
    fn index(&self, name: &str) -> &AttributeValue {
        match self.get(name) {
            Some(v) => v,
            None => panic!("no attribute `{name}` in the item"),
        }
    }
}

/// As a JSON object of DynamoDB-JSON values, in name order.
impl serde::Serialize for Item {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl fmt::Debug for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> AttributeValue {
        AttributeValue::S(text.into())
    }

    #[test]
    fn keeps_names_sorted_and_unique() {
        let mut item = Item::from([("b", s("1")), ("a", s("2")), ("b", s("3"))]);
        assert_eq!(
            item.keys().map(Text::as_str).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(item["b"], s("3"), "the later entry wins");
        assert_eq!(item.insert("c".into(), s("4")), None);
        assert_eq!(item.insert("a".into(), s("5")), Some(s("2")));
        assert_eq!(item.remove("b"), Some(s("3")));
        assert_eq!(item.get("b"), None);
        assert!(item.contains_key("c"));
        assert_eq!(
            item.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            ["a", "c"]
        );
    }

    #[test]
    fn from_entries_names_a_duplicate() {
        let ok = Item::from_entries(vec![("z".into(), s("1")), ("y".into(), s("2"))]).unwrap();
        assert_eq!(ok.keys().next().map(Text::as_str), Some("y"));
        let dup = Item::from_entries(vec![("x".into(), s("1")), ("x".into(), s("2"))]);
        assert_eq!(dup.unwrap_err(), "x");
        // Ascending up to a repeat that sorting brings next to its twin.
        let dup = Item::from_entries(vec![
            ("a".into(), s("1")),
            ("b".into(), s("2")),
            ("a".into(), s("3")),
        ]);
        assert_eq!(dup.unwrap_err(), "a");
        let sorted = Item::from_entries(vec![("a".into(), s("1")), ("b".into(), s("2"))]).unwrap();
        assert_eq!(
            sorted.keys().map(Text::as_str).collect::<Vec<_>>(),
            ["a", "b"]
        );
    }
}
