//! What the items of each table look like, and how they change.
//!
//! Each profile builds a new item's non-key attributes and applies one
//! plausible update to an existing item. Together the profiles use every
//! DynamoDB type, numbers across the whole range, nesting several levels
//! deep, and text that needs JSON escaping, because those are the places a
//! CDC bridge goes wrong.

use dynamo_cdc_core::{AttributeValue, Item, Text};
use rand::Rng;
use rand::rngs::StdRng;

use super::Profile;
use super::bench_profiles;
use super::values::{
    add_to_string_set, big_integer, binary_set, bump, bytes, decimal, geo, hex, int_of, map, n,
    num, number_set, pick, s, scientific, string_set,
};

/// Builds the non-key attributes of a new item.
pub(crate) fn new_item(profile: Profile, rng: &mut StdRng, now_ms: u64, ttl: Option<&str>) -> Item {
    let mut item = match profile {
        Profile::Orders => orders::new(rng, now_ms),
        Profile::Customers => customers::new(rng, now_ms),
        Profile::Events => events::new(rng, now_ms),
        Profile::Pings => bench_profiles::pings::new(rng, now_ms),
        Profile::Documents => bench_profiles::documents::new(rng, now_ms),
        Profile::Wide => bench_profiles::wide::new(rng, now_ms),
    };
    if let Some(attr) = ttl
        && let Some(expiry_s) = ttl_on_insert(profile, rng, &item, now_ms)
    {
        item.insert(attr.into(), n(expiry_s));
    }
    item
}

/// Applies one update to `item`; always changes at least `version`.
pub(crate) fn modify(
    profile: Profile,
    rng: &mut StdRng,
    item: &mut Item,
    now_ms: u64,
    ttl: Option<&str>,
) {
    match profile {
        Profile::Orders => orders::modify(rng, item, now_ms),
        Profile::Customers => customers::modify(rng, item, now_ms),
        Profile::Events => events::modify(rng, item, now_ms),
        Profile::Pings => bench_profiles::pings::modify(rng, item, now_ms),
        Profile::Documents => bench_profiles::documents::modify(rng, item, now_ms),
        Profile::Wide => bench_profiles::wide::modify(rng, item, now_ms),
    }
    bump(item, "version", 1);
    item.insert("updated_at".into(), n(now_ms as i64));
    // Items that left their short-lived state (a cart was placed, a trial
    // was upgraded) stop expiring, as an application would arrange.
    if let Some(attr) = ttl
        && !keeps_ttl(profile, item)
    {
        item.remove(attr);
    }
}

/// Expiry (epoch seconds) given to a new item, if its state is short-lived.
fn ttl_on_insert(profile: Profile, rng: &mut StdRng, item: &Item, now_ms: u64) -> Option<i64> {
    let now_s = (now_ms / 1000) as i64;
    match profile {
        Profile::Orders => keeps_ttl(profile, item).then(|| now_s + rng.random_range(60..600)),
        Profile::Customers => keeps_ttl(profile, item).then(|| now_s + rng.random_range(120..900)),
        // Telemetry is kept for a week, longer than any fixture spans.
        Profile::Events => Some(now_s + 7 * 86_400),
        // The benchmark shapes have no TTL attribute.
        Profile::Pings | Profile::Documents | Profile::Wide => None,
    }
}

fn keeps_ttl(profile: Profile, item: &Item) -> bool {
    let text = |name: &str| match item.get(name) {
        Some(AttributeValue::S(v)) => v.as_str(),
        _ => "",
    };
    match profile {
        Profile::Orders => text("status") == "cart",
        Profile::Customers => text("tier") == "trial",
        Profile::Events | Profile::Pings | Profile::Documents | Profile::Wide => true,
    }
}

mod orders {
    use super::*;

    /// Product name, unit price in cents. Some names need JSON escaping or
    /// are not ASCII.
    const PRODUCTS: &[(&str, i64)] = &[
        ("Espresso beans 1 kg", 2499),
        ("Café crème mug", 1450),
        ("東京 tote bag", 3200),
        ("Ünïcode T-shirt (XL)", 1999),
        ("USB-C cable 2 m", 899),
        ("Noise-cancelling headphones", 24_900),
        ("Notebook A5 \"dotted\"", 650),
        ("Plant pot Ø 20 cm", 1275),
        ("Sticker C:\\Users\\me", 199),
        ("Gift card 🎁", 5000),
    ];
    const TAGS: &[&str] = &[
        "fragile", "express", "gift", "bulk", "b2b", "eco", "preorder",
    ];
    const CITIES: &[(&str, &str)] = &[
        ("Berlin", "DE"),
        ("São Paulo", "BR"),
        ("Seattle", "US"),
        ("Kraków", "PL"),
        ("大阪", "JP"),
        ("Lagos", "NG"),
    ];
    const METHODS: &[&str] = &["standard", "express", "pickup", "same-day"];
    const CURRENCIES: &[&str] = &["USD", "EUR", "GBP", "JPY"];

    pub(super) fn new(rng: &mut StdRng, now_ms: u64) -> Item {
        let (product, unit_cents) = PRODUCTS[rng.random_range(0..PRODUCTS.len())];
        let qty = rng.random_range(1..=5i64);
        let discount = -rng.random_range(0..=unit_cents * qty / 5);
        let status = if rng.random_bool(0.4) {
            "cart"
        } else {
            "placed"
        };
        let gift = rng.random_bool(0.25);
        let (city, country) = CITIES[rng.random_range(0..CITIES.len())];
        let mut item = Item::new();
        let mut put = |k: &str, v| {
            item.insert(k.into(), v);
        };
        put("sku", s(format!("SKU-{:05}", rng.random_range(0..100_000))));
        put("product", s(product));
        put("qty", n(qty));
        put("unit_price", decimal(unit_cents, 2));
        put("discount", decimal(discount, 2));
        put("line_total", decimal(unit_cents * qty + discount, 2));
        put("currency", s(pick(rng, CURRENCIES)));
        // Exchange rates carry more digits than a double holds.
        put(
            "fx_rate",
            AttributeValue::N(scientific(rng, 30..=30, 0..=0, false)),
        );
        put("status", s(status));
        put("gift", AttributeValue::Bool(gift));
        put(
            "gift_message",
            if gift {
                s("Happy birthday!\nLove, \"A\" ❤")
            } else {
                AttributeValue::Null
            },
        );
        put("tags", string_set(rng, TAGS, 1..=3));
        put(
            "dims_cm",
            number_set(rng, 3..=3, |r| {
                num(&format!(
                    "{}.{}",
                    r.random_range(1..80),
                    r.random_range(0..10)
                ))
            }),
        );
        put("thumbnail", AttributeValue::B(bytes(rng, 24..=40)));
        put("attachments", binary_set(rng, 1..=3, 16));
        put(
            "shipping",
            map([
                ("method", s(pick(rng, METHODS))),
                (
                    "address",
                    map([
                        (
                            "line1",
                            s(format!(
                                "{} Main St., Apt {}",
                                rng.random_range(1..999),
                                rng.random_range(1..40)
                            )),
                        ),
                        ("city", s(city)),
                        (
                            "postcode",
                            s(format!("{:05}", rng.random_range(0..100_000))),
                        ),
                        ("country", s(country)),
                        ("geo", geo(rng)),
                    ]),
                ),
                (
                    "eta_ms",
                    n(now_ms as i64 + rng.random_range(1..10) * 86_400_000),
                ),
            ]),
        );
        put(
            "history",
            AttributeValue::L(vec![history_entry(status, now_ms)]),
        );
        put("created_at", n(now_ms as i64));
        put("updated_at", n(now_ms as i64));
        put("version", n(1));
        item
    }

    fn history_entry(status: &str, at_ms: u64) -> AttributeValue {
        map([("status", s(status)), ("at", n(at_ms as i64))])
    }

    pub(super) fn modify(rng: &mut StdRng, item: &mut Item, now_ms: u64) {
        let status = match item.get("status") {
            Some(AttributeValue::S(v)) => v.clone(),
            _ => Text::from("placed"),
        };
        let next = match status.as_str() {
            // Finished orders only see edits such as a new tag.
            "cancelled" | "delivered" => status.as_str(),
            _ if rng.random_bool(0.05) => "cancelled",
            "cart" if rng.random_bool(0.5) => "cart",
            "cart" => "placed",
            "placed" => "paid",
            "paid" => "shipped",
            _ => "delivered",
        };
        if next == "cart" {
            // Still shopping: the quantity changes.
            let qty = rng.random_range(1..=9i64);
            let unit = cents(item, "unit_price");
            let discount = cents(item, "discount");
            item.insert("qty".into(), n(qty));
            item.insert("line_total".into(), decimal(unit * qty + discount, 2));
        }
        item.insert("status".into(), s(next));
        if let Some(AttributeValue::L(history)) = item.get_mut("history") {
            history.push(history_entry(next, now_ms));
        }
        if rng.random_bool(0.2) {
            let gift = !matches!(item.get("gift"), Some(AttributeValue::Bool(true)));
            item.insert("gift".into(), AttributeValue::Bool(gift));
            let message = if gift {
                s("Enjoy ☕")
            } else {
                AttributeValue::Null
            };
            item.insert("gift_message".into(), message);
        }
        if rng.random_bool(0.2) {
            add_to_string_set(item, "tags", pick(rng, TAGS));
        }
        // Now and then a correction deep inside a nested map.
        if rng.random_bool(0.15)
            && let Some(AttributeValue::M(shipping)) = item.get_mut("shipping")
            && let Some(AttributeValue::M(address)) = shipping.get_mut("address")
        {
            address.insert("geo".into(), geo(rng));
        }
    }

    /// A two-decimal attribute as whole cents.
    fn cents(item: &Item, name: &str) -> i64 {
        match item.get(name) {
            Some(AttributeValue::N(v)) => v
                .to_decimal128(2)
                .and_then(|c| i64::try_from(c).ok())
                .unwrap_or(0),
            _ => 0,
        }
    }
}

mod customers {
    use super::*;

    const NAMES: &[&str] = &[
        "Zoë Müller",
        "José Álvarez",
        "李小龙",
        "Ngozi Okonkwo",
        "Siobhán O'Brien",
        "Dr. Emily \"Em\" Chen",
        "Åsa Lindqvist",
        "Ольга Петрова",
    ];
    const TIERS: &[&str] = &["free", "trial", "pro", "enterprise"];
    const SEGMENTS: &[&str] = &[
        "newsletter",
        "churn-risk",
        "vip",
        "beta",
        "emea",
        "apac",
        "amer",
    ];
    const LANGUAGES: &[&str] = &["en-US", "de-DE", "pt-BR", "ja-JP", "fr-CA"];
    const TOPICS: &[&str] = &["billing", "security", "product", "events"];

    pub(super) fn new(rng: &mut StdRng, now_ms: u64) -> Item {
        let name = pick(rng, NAMES);
        let mut item = Item::new();
        let mut put = |k: &str, v| {
            item.insert(k.into(), v);
        };
        put("email", s(format!("user.{}@example.com", hex(rng, 8))));
        put("name", s(name));
        put("age", n(rng.random_range(18..=90)));
        put("tier", s(pick(rng, TIERS)));
        put("verified", AttributeValue::Bool(rng.random_bool(0.6)));
        put("deleted_at", AttributeValue::Null);
        // Balances may be negative and carry four decimals.
        put(
            "balance",
            decimal(rng.random_range(-5_000_000..50_000_000_000), 4),
        );
        // Wider than i64: a column must not silently become Int64.
        put(
            "lifetime_value",
            AttributeValue::N(big_integer(rng, 20..=38, false)),
        );
        put("loyalty_points", n(rng.random_range(0..i64::MAX / 2)));
        // Sparse attributes at the edges of DynamoDB's range: near the
        // smallest magnitude (1E-130) and near the largest (9.99…E+125).
        if rng.random_bool(0.35) {
            let tiny = if rng.random_bool(0.2) {
                num("1E-130")
            } else {
                scientific(rng, 1..=6, -129..=-100, false)
            };
            put("risk_score", AttributeValue::N(tiny));
        }
        if rng.random_bool(0.35) {
            let huge = if rng.random_bool(0.2) {
                num(&format!("9.{}E+125", "9".repeat(37)))
            } else {
                let negative = rng.random_bool(0.3);
                scientific(rng, 1..=5, 100..=125, negative)
            };
            put("credit_limit", AttributeValue::N(huge));
        }
        put("segments", string_set(rng, SEGMENTS, 1..=3));
        put(
            "lucky_numbers",
            number_set(rng, 1..=4, |r| match r.random_range(0..3) {
                0 => num(&r.random_range(-100..100).to_string()),
                1 => num(&format!(
                    "{}.{:02}",
                    r.random_range(-9..10),
                    r.random_range(1..100)
                )),
                _ => {
                    let negative = r.random_bool(0.5);
                    big_integer(r, 25..=25, negative)
                }
            }),
        );
        put("avatar", AttributeValue::B(bytes(rng, 32..=64)));
        put("api_key_hashes", binary_set(rng, 1..=3, 20));
        put(
            "phones",
            AttributeValue::L(
                (0..rng.random_range(0..=2))
                    .map(|_| s(format!("+1-555-{:04}", rng.random_range(0..10_000))))
                    .collect(),
            ),
        );
        put(
            "addresses",
            AttributeValue::L(vec![map([
                ("kind", s("home")),
                (
                    "city",
                    s(pick(rng, &["Berlin", "Austin", "Nairobi", "Zürich"])),
                ),
                ("primary", AttributeValue::Bool(true)),
            ])]),
        );
        put("preferences", preferences(rng));
        put("metadata", metadata(rng, now_ms));
        put("login_count", n(0));
        put("created_at", n(now_ms as i64));
        put("updated_at", n(now_ms as i64));
        put("version", n(1));
        item
    }

    /// Five levels: preferences > notifications > channels > push > quiet_hours.
    fn preferences(rng: &mut StdRng) -> AttributeValue {
        map([
            ("language", s(pick(rng, LANGUAGES))),
            ("theme", s(pick(rng, &["dark", "light", "system"]))),
            (
                "notifications",
                map([
                    ("email", AttributeValue::Bool(rng.random_bool(0.7))),
                    ("sms", AttributeValue::Bool(rng.random_bool(0.2))),
                    (
                        "channels",
                        map([(
                            "push",
                            map([
                                ("enabled", AttributeValue::Bool(rng.random_bool(0.5))),
                                (
                                    "quiet_hours",
                                    AttributeValue::L(vec![
                                        n(rng.random_range(20..24)),
                                        n(rng.random_range(5..9)),
                                    ]),
                                ),
                                ("topics", string_set(rng, TOPICS, 1..=3)),
                            ]),
                        )]),
                    ),
                ]),
            ),
        ])
    }

    /// Free-form data: awkward names and a list mixing every kind of value.
    fn metadata(rng: &mut StdRng, now_ms: u64) -> AttributeValue {
        map([
            (
                "signup source",
                s(pick(rng, &["web", "ios", "android", "partner"])),
            ),
            (
                "utm.campaign",
                s(pick(rng, &["spring-sale", "referral", "none"])),
            ),
            (
                "1st_touch",
                n(now_ms as i64 - rng.random_range(0..86_400_000)),
            ),
            (
                "mixed",
                AttributeValue::L(vec![
                    s("x"),
                    decimal(rng.random_range(-1000..1000), 1),
                    AttributeValue::Bool(false),
                    AttributeValue::Null,
                    AttributeValue::B(bytes(rng, 4..=4)),
                    AttributeValue::L(vec![n(1), s("two"), AttributeValue::L(Vec::new())]),
                    map([("nested", map([("deeper", s("yes"))]))]),
                ]),
            ),
        ])
    }

    pub(super) fn modify(rng: &mut StdRng, item: &mut Item, now_ms: u64) {
        match rng.random_range(0..6) {
            0 => {
                let tier = match item.get("tier") {
                    Some(AttributeValue::S(t)) if t == "trial" || t == "free" => "pro",
                    _ => "enterprise",
                };
                item.insert("tier".into(), s(tier));
            }
            1 => {
                let balance = rng.random_range(-5_000_000..50_000_000_000);
                item.insert("balance".into(), decimal(balance, 4));
            }
            2 => add_to_string_set(item, "segments", pick(rng, SEGMENTS)),
            3 => {
                // A toggle five levels down.
                item.insert("preferences".into(), preferences(rng));
            }
            4 => {
                if let Some(AttributeValue::L(phones)) = item.get_mut("phones") {
                    phones.push(s(format!("+44-20-{:04}", rng.random_range(0..10_000))));
                }
            }
            _ => {
                item.insert("verified".into(), AttributeValue::Bool(true));
            }
        }
        bump(item, "login_count", 1);
        item.insert("last_login_at".into(), n(now_ms as i64));
        let points = int_of(item, "loyalty_points").unwrap_or(0);
        item.insert(
            "loyalty_points".into(),
            n(points.saturating_add(rng.random_range(0..500))),
        );
    }
}

mod events {
    use super::*;

    const TYPES: &[&str] = &["click", "view", "purchase", "error", "heartbeat", "login"];
    const SOURCES: &[&str] = &["ios", "android", "web", "api", "batch"];
    const STATUSES: &[&str] = &["received", "enriched", "processed", "archived"];
    const LABELS: &[&str] = &[
        "a/b", "beta", "canary", "eu", "us", "mobile", "slow", "retry",
    ];

    pub(super) fn new(rng: &mut StdRng, now_ms: u64) -> Item {
        let mut item = Item::new();
        let mut put = |k: &str, v| {
            item.insert(k.into(), v);
        };
        put("type", s(pick(rng, TYPES)));
        put("source", s(pick(rng, SOURCES)));
        put("status", s(STATUSES[0]));
        put("ts", n(now_ms as i64));
        put(
            "user",
            map([
                ("id", s(format!("u-{}", hex(rng, 10)))),
                (
                    "ip",
                    s(format!(
                        "10.{}.{}.{}",
                        rng.random_range(0..256),
                        rng.random_range(0..256),
                        rng.random_range(0..256)
                    )),
                ),
            ]),
        );
        put("metrics", metrics(rng));
        put("labels", string_set(rng, LABELS, 2..=4));
        put(
            "samples",
            number_set(rng, 2..=3, |r| {
                num(&format!(
                    "{}.{:03}",
                    r.random_range(-50..500),
                    r.random_range(0..1000)
                ))
            }),
        );
        put(
            "flags",
            AttributeValue::L(vec![
                AttributeValue::Bool(rng.random_bool(0.5)),
                AttributeValue::Null,
            ]),
        );
        put("geo", geo(rng));
        put("digest", AttributeValue::B(bytes(rng, 12..=12)));
        put("chunks", binary_set(rng, 2..=2, 12));
        put("version", n(1));
        item
    }

    fn metrics(rng: &mut StdRng) -> AttributeValue {
        map([
            ("latency_ms", decimal(rng.random_range(1..500_000), 3)),
            ("score", decimal(rng.random_range(-10_000..10_000), 4)),
            ("total", AttributeValue::N(big_integer(rng, 24..=24, false))),
        ])
    }

    pub(super) fn modify(rng: &mut StdRng, item: &mut Item, _now_ms: u64) {
        let next = match item.get("status") {
            Some(AttributeValue::S(st)) => STATUSES
                .iter()
                .position(|x| x == st)
                .map_or(STATUSES[0], |i| STATUSES[(i + 1).min(STATUSES.len() - 1)]),
            _ => STATUSES[0],
        };
        item.insert("status".into(), s(next));
        item.insert("metrics".into(), metrics(rng));
        if rng.random_bool(0.3) {
            add_to_string_set(item, "labels", pick(rng, LABELS));
        }
    }
}
