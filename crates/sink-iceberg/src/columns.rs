//! Which Iceberg field holds which DynamoDB attribute, and in what form.
//!
//! A table's flat-row schema ([`TableSchema`]) grows as data arrives; its
//! Iceberg table grows with it by schema evolution, never by forcing a
//! type Iceberg cannot promote:
//!
//! - numbers without a declared type are exact decimal strings (the sink
//!   infers in `NumbersMode::String`), so a column never has to go from
//!   `long` to `string`;
//! - a field's form never changes: a column that widens to another form (a
//!   string column that then holds a number, and so turns into DynamoDB
//!   JSON) gets a new field, `<column>__json`. The old field keeps what was
//!   written into it, the new one holds what comes after, and a reader
//!   never has to guess which form a value is in.
//!
//! Each attribute field's DynamoDB form is recorded in the table properties
//! as `dynamo-cdc.field.<field name>` = `{"attribute": ..., "type": <tag>}`,
//! so a restart continues with the same fields.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_schema::{DataType, Field};
use dynamo_cdc_transform::{ColumnType, META_COLUMNS, SNAPSHOT_COLUMNS, TableSchema};
use iceberg::spec::{ListType, MapType, NestedField, PrimitiveType, Schema, StructType, Type};
use serde::{Deserialize, Serialize};

/// The prefix of the table properties that record each field's form.
pub(crate) const FIELD_PROPERTY: &str = "dynamo-cdc.field.";

/// The Parquet field-id key Arrow writers and readers use.
const FIELD_ID_KEY: &str = "PARQUET:field_id";

/// What a field property records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FieldForm {
    /// The DynamoDB attribute.
    pub attribute: String,
    /// The `dynamodb.type` tag of the values (`S`, `N`, `BOOL`, `json`, ...).
    #[serde(rename = "type")]
    pub tag: String,
}

/// The Iceberg type of a column layout; `None` for a column that has held
/// only nulls (it gets a field once it holds a value). Nested ids are
/// placeholders: the catalog assigns real ones.
pub(crate) fn iceberg_type(ty: &ColumnType) -> Option<Type> {
    let p = |p| Some(Type::Primitive(p));
    match ty {
        ColumnType::Null => None,
        ColumnType::Utf8 | ColumnType::DecimalString | ColumnType::Json => p(PrimitiveType::String),
        ColumnType::Int64 => p(PrimitiveType::Long),
        ColumnType::Float64 => p(PrimitiveType::Double),
        ColumnType::Decimal { precision, scale } => p(PrimitiveType::Decimal {
            precision: u32::from(*precision),
            scale: u32::from(*scale),
        }),
        ColumnType::Binary => p(PrimitiveType::Binary),
        ColumnType::Boolean => p(PrimitiveType::Boolean),
        ColumnType::Set(inner) | ColumnType::List(inner) => {
            let element = iceberg_type(inner).unwrap_or(Type::Primitive(PrimitiveType::String));
            Some(Type::List(ListType::new(Arc::new(
                NestedField::list_element(0, element, false),
            ))))
        }
        ColumnType::Map(value) => {
            let value = iceberg_type(value).unwrap_or(Type::Primitive(PrimitiveType::String));
            Some(Type::Map(MapType::new(
                Arc::new(NestedField::map_key_element(
                    0,
                    Type::Primitive(PrimitiveType::String),
                )),
                Arc::new(NestedField::map_value_element(0, value, false)),
            )))
        }
        ColumnType::Struct(fields) => Some(Type::Struct(StructType::new(
            fields
                .iter()
                .map(|(name, t)| {
                    let t = iceberg_type(t).unwrap_or(Type::Primitive(PrimitiveType::String));
                    Arc::new(NestedField::optional(0, name, t))
                })
                .collect(),
        ))),
    }
}

/// Whether two types are the same shape, ignoring field ids.
fn same_shape(a: &Type, b: &Type) -> bool {
    match (a, b) {
        (Type::Primitive(x), Type::Primitive(y)) => x == y,
        (Type::List(x), Type::List(y)) => {
            same_shape(&x.element_field.field_type, &y.element_field.field_type)
        }
        (Type::Map(x), Type::Map(y)) => {
            same_shape(&x.key_field.field_type, &y.key_field.field_type)
                && same_shape(&x.value_field.field_type, &y.value_field.field_type)
        }
        (Type::Struct(x), Type::Struct(y)) => {
            x.fields().len() == y.fields().len()
                && x.fields()
                    .iter()
                    .zip(y.fields())
                    .all(|(f, g)| f.name == g.name && same_shape(&f.field_type, &g.field_type))
        }
        _ => false,
    }
}

/// The layout a field property and the field's type describe, for
/// resuming a [`TableSchema`]; `None` when they do not fit together.
pub(crate) fn column_type(tag: &str, ty: &Type) -> Option<ColumnType> {
    let number = |p: &PrimitiveType| match p {
        PrimitiveType::String => Some(ColumnType::DecimalString),
        PrimitiveType::Long => Some(ColumnType::Int64),
        PrimitiveType::Double => Some(ColumnType::Float64),
        PrimitiveType::Decimal { precision, scale } => Some(ColumnType::Decimal {
            precision: u8::try_from(*precision).ok()?,
            scale: u8::try_from(*scale).ok()?,
        }),
        _ => None,
    };
    match (tag, ty) {
        ("S", Type::Primitive(PrimitiveType::String)) => Some(ColumnType::Utf8),
        ("json", Type::Primitive(PrimitiveType::String)) => Some(ColumnType::Json),
        ("N", Type::Primitive(p)) => number(p),
        ("B", Type::Primitive(PrimitiveType::Binary)) => Some(ColumnType::Binary),
        ("BOOL", Type::Primitive(PrimitiveType::Boolean)) => Some(ColumnType::Boolean),
        ("SS", Type::List(_)) => Some(ColumnType::Set(Box::new(ColumnType::Utf8))),
        ("BS", Type::List(_)) => Some(ColumnType::Set(Box::new(ColumnType::Binary))),
        ("NS", Type::List(l)) => match &*l.element_field.field_type {
            Type::Primitive(p) => Some(ColumnType::Set(Box::new(number(p)?))),
            _ => None,
        },
        _ => None,
    }
}

/// One attribute field of the Iceberg table.
#[derive(Clone, Debug)]
struct AttributeField {
    field: Arc<NestedField>,
    form: FieldForm,
}

/// The attribute fields of one Iceberg table, read from its schema and
/// properties.
#[derive(Clone, Debug, Default)]
pub(crate) struct FieldMap {
    fields: Vec<AttributeField>,
    /// Meta column name -> field.
    meta: HashMap<String, Arc<NestedField>>,
    /// Names of fields someone else added (no recorded form): never
    /// given to a new field.
    foreign: Vec<String>,
}

/// A field the table needs: its name, type and form.
pub(crate) type NewField = (String, Type, FieldForm);

impl FieldMap {
    /// Reads the fields of `schema` and the forms in `properties`. Fields
    /// without a recorded form (added by someone else) are left alone.
    pub(crate) fn read(schema: &Schema, properties: &HashMap<String, String>) -> FieldMap {
        let mut map = FieldMap::default();
        for field in schema.as_struct().fields() {
            let name = field.name.as_str();
            if META_COLUMNS.contains(&name) || SNAPSHOT_COLUMNS.contains(&name) {
                map.meta.insert(field.name.clone(), field.clone());
                continue;
            }
            let form = properties
                .get(&format!("{FIELD_PROPERTY}{}", field.name))
                .and_then(|v| serde_json::from_str::<FieldForm>(v).ok());
            match form {
                Some(form) => map.fields.push(AttributeField {
                    field: field.clone(),
                    form,
                }),
                None => map.foreign.push(field.name.clone()),
            }
        }
        map
    }

    /// The earlier columns, as Arrow fields a [`TableSchema`] resumes from.
    pub(crate) fn earlier_fields(&self) -> Vec<Field> {
        self.fields
            .iter()
            .filter_map(|f| {
                let ty = column_type(&f.form.tag, &f.field.field_type)?;
                Some(ty.field(&f.field.name, Some(&f.form.attribute)))
            })
            .collect()
    }

    /// The field holding `form` in the shape `ty`: the newest such.
    fn holder(&self, form: &FieldForm, ty: &Type) -> Option<&AttributeField> {
        self.fields
            .iter()
            .filter(|f| f.form == *form && same_shape(&f.field.field_type, ty))
            .max_by_key(|f| f.field.id)
    }

    /// The fields the table needs so it can hold every column of `schema`.
    pub(crate) fn missing(&self, schema: &TableSchema) -> Vec<NewField> {
        let mut out: Vec<NewField> = Vec::new();
        for column in schema.columns() {
            let Some(ty) = iceberg_type(&column.ty) else {
                continue;
            };
            let form = FieldForm {
                attribute: column.attribute.clone(),
                tag: column.ty.tag().to_owned(),
            };
            if self.holder(&form, &ty).is_some() {
                continue;
            }
            // Names are told apart case-insensitively, as Spark, Athena
            // and Hive match them, and none may be the partition field's.
            let same = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
            let taken = |name: &str| {
                self.fields.iter().any(|f| same(&f.field.name, name))
                    || self.meta.keys().any(|m| same(m, name))
                    || self.foreign.iter().any(|n| same(n, name))
                    || out.iter().any(|(n, _, _)| same(n, name))
                    || same(name, crate::catalog::PARTITION_FIELD)
            };
            // Iceberg refuses a `.` in a new column's name (it separates
            // a nested field's path), and catalogs refuse long or
            // multi-line ones; the attribute's own name is kept in the
            // field's form.
            let mut name = catalog_name(&column.name);
            if taken(&name) {
                let base = format!("{name}__{}", form.tag.to_lowercase());
                name = base.clone();
                let mut n = 2;
                while taken(&name) {
                    name = format!("{base}{n}");
                    n += 1;
                }
            }
            out.push((name, ty, form));
        }
        out
    }

    /// The snapshot columns the table lacks (one written before they
    /// existed): added with the next schema change.
    pub(crate) fn missing_snapshot_fields(&self) -> Vec<Arc<NestedField>> {
        snapshot_fields(0)
            .into_iter()
            .filter(|f| !self.meta.contains_key(&f.name))
            .collect()
    }

    /// The Arrow fields, with field ids, to write `schema`'s rows under:
    /// per column of `schema` the Iceberg field (`None` for an all-null
    /// column, which is left out of the file), then the meta columns and
    /// the snapshot columns.
    ///
    /// # Errors
    /// When a column has no field yet ([`FieldMap::missing`] first).
    pub(crate) fn file_fields(
        &self,
        schema: &TableSchema,
    ) -> Result<(Vec<Option<Field>>, Vec<Field>), String> {
        let mut columns = Vec::with_capacity(schema.columns().len());
        for column in schema.columns() {
            let Some(ty) = iceberg_type(&column.ty) else {
                columns.push(None);
                continue;
            };
            let form = FieldForm {
                attribute: column.attribute.clone(),
                tag: column.ty.tag().to_owned(),
            };
            let held = self.holder(&form, &ty).ok_or_else(|| {
                format!(
                    "attribute `{}` has no field in the Iceberg table",
                    column.attribute
                )
            })?;
            let arrow = column.ty.field(&held.field.name, Some(&column.attribute));
            columns.push(Some(with_ids(&arrow, &held.field)?));
        }
        // The snapshot schema holds the meta columns too; its snapshot
        // columns are null on the stream's changes here.
        let arrow_meta = schema.snapshot_arrow_schema();
        let mut meta = Vec::with_capacity(META_COLUMNS.len() + SNAPSHOT_COLUMNS.len());
        for name in META_COLUMNS.into_iter().chain(SNAPSHOT_COLUMNS) {
            let field = self
                .meta
                .get(name)
                .ok_or_else(|| format!("the Iceberg table has no `{name}` column"))?;
            let arrow = arrow_meta
                .field_with_name(name)
                .map_err(|e| e.to_string())?;
            let nullable = arrow.is_nullable() || SNAPSHOT_COLUMNS.contains(&name);
            meta.push(with_ids(&arrow.clone().with_nullable(nullable), field)?);
        }
        Ok((columns, meta))
    }
}

/// `arrow` with the Parquet field ids of `field`, at every level.
fn with_ids(arrow: &Field, field: &NestedField) -> Result<Field, String> {
    let data_type = match (arrow.data_type(), &*field.field_type) {
        (DataType::List(item), Type::List(list)) => {
            DataType::List(Arc::new(with_ids(item, &list.element_field)?))
        }
        (DataType::Map(entries, sorted), Type::Map(map)) => {
            let DataType::Struct(kv) = entries.data_type() else {
                return Err(format!(
                    "`{}`: a map's entries are not a struct",
                    arrow.name()
                ));
            };
            let [key, value] = kv.iter().collect::<Vec<_>>()[..] else {
                return Err(format!(
                    "`{}`: a map's entries are not a key and a value",
                    arrow.name()
                ));
            };
            let kv = vec![
                with_ids(key, &map.key_field)?,
                with_ids(value, &map.value_field)?,
            ];
            // The entries group itself has no Iceberg field, so no id.
            let entries = Field::new(entries.name(), DataType::Struct(kv.into()), false);
            DataType::Map(Arc::new(entries), *sorted)
        }
        (DataType::Struct(children), Type::Struct(st)) => DataType::Struct(
            children
                .iter()
                .map(|child| {
                    let f = st
                        .fields()
                        .iter()
                        .find(|f| f.name == *child.name())
                        .ok_or_else(|| format!("no Iceberg field for `{}`", child.name()))?;
                    with_ids(child, f)
                })
                .collect::<Result<Vec<Field>, String>>()?
                .into(),
        ),
        (t, _) => t.clone(),
    };
    let mut metadata = arrow.metadata().clone();
    metadata.insert(FIELD_ID_KEY.to_owned(), field.id.to_string());
    Ok(Field::new(arrow.name(), data_type, arrow.is_nullable()).with_metadata(metadata))
}

/// The meta columns of every table, as Iceberg fields (ids are assigned
/// when the table is created).
pub(crate) fn meta_fields() -> Vec<Arc<NestedField>> {
    let string = || Type::Primitive(PrimitiveType::String);
    let boolean = || Type::Primitive(PrimitiveType::Boolean);
    let fields = [
        NestedField::required(1, "__op", string()).with_doc("c, u, d or r (a snapshot read)"),
        NestedField::required(2, "__table", string()),
        NestedField::required(3, "__shard_id", string()),
        NestedField::required(4, "__sequence_number", string()).with_doc(
            "orders the changes of one shard: decimal digits without leading zeros, so compare \
             as numbers (padded to 40 digits), not as text",
        ),
        NestedField::required(5, "__event_id", string()),
        NestedField::optional(6, "__source_ts_ms", Type::Primitive(PrimitiveType::Long)),
        NestedField::required(7, "__deleted", boolean()),
        NestedField::required(8, "__ttl_delete", boolean()),
    ];
    fields.into_iter().map(Arc::new).collect()
}

/// The snapshot columns, after the meta columns, numbered from
/// `first_id`: a snapshot row's id, read time and marker (as in the
/// Parquet sink's snapshot files), null on changes of the stream.
pub(crate) fn snapshot_fields(first_id: i32) -> Vec<Arc<NestedField>> {
    let string = || Type::Primitive(PrimitiveType::String);
    let fields = [
        NestedField::optional(first_id, SNAPSHOT_COLUMNS[0], string())
            .with_doc("the snapshot of a snapshot row (`__op` = r); null on changes"),
        NestedField::optional(
            first_id + 1,
            SNAPSHOT_COLUMNS[1],
            Type::Primitive(PrimitiveType::Long),
        )
        .with_doc("when the snapshot read the item, in epoch milliseconds"),
        NestedField::optional(first_id + 2, SNAPSHOT_COLUMNS[2], string())
            .with_doc("first, true or last, as Debezium's source.snapshot"),
    ];
    fields.into_iter().map(Arc::new).collect()
}

/// The longest new column name, in bytes. AWS Glue takes names of up to
/// 255 characters, and table property keys of up to 255 too, the sink's
/// `dynamo-cdc.field.<name>` among them: a longer one made the catalog
/// refuse the schema change, which no retry fixes, and stopped the run on
/// one odd attribute name (DynamoDB allows names of up to 64 KiB).
const MAX_NAME_BYTES: usize = 200;

/// A name catalogs take for a column of attribute `name`: `.` (a nested
/// field's path to Iceberg) and control characters (catalogs want one line)
/// become `_`; past [`MAX_NAME_BYTES`] it is cut at a character boundary and
/// ends with `_h` and a hash of the whole name, so that two long names
/// sharing their start stay apart.
pub(crate) fn catalog_name(name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| if c == '.' || c.is_control() { '_' } else { c })
        .collect();
    if clean.len() <= MAX_NAME_BYTES {
        return clean;
    }
    let suffix = format!("_h{:016x}", dynamo_cdc_core::stable_hash(name.as_bytes()));
    format!("{}{suffix}", cut(&clean, MAX_NAME_BYTES - suffix.len()))
}

/// A column's doc: the attribute it holds and its DynamoDB type, on one
/// line, its name cut as [`catalog_name`] cuts one (Glue takes comments of
/// up to 255 characters).
pub(crate) fn column_doc(form: &FieldForm) -> String {
    let attribute: String = form
        .attribute
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let shown = cut(&attribute, MAX_NAME_BYTES);
    let more = if shown.len() < attribute.len() {
        "…"
    } else {
        ""
    };
    format!("DynamoDB attribute `{shown}{more}` ({})", form.tag)
}

/// The longest start of `text` of at most `max` bytes that ends on a
/// character boundary.
fn cut(text: &str, max: usize) -> &str {
    let mut at = max.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    &text[..at]
}

#[cfg(test)]
mod tests {
    use dynamo_cdc_core::{AttributeValue, Item};
    use dynamo_cdc_transform::NumbersMode;

    use super::*;

    fn table_schema(rows: &[Item]) -> TableSchema {
        let mut s = TableSchema::new("t", None, NumbersMode::String);
        for r in rows {
            s.admit(r).unwrap();
        }
        s
    }

    fn item(pairs: &[(&str, AttributeValue)]) -> Item {
        let mut item = Item::new();
        for (k, v) in pairs {
            item.insert((*k).into(), v.clone());
        }
        item
    }

    /// A table whose schema holds the meta and snapshot columns and
    /// `fields`, with forms.
    fn iceberg(fields: &[(i32, &str, Type, &str, &str)]) -> FieldMap {
        let mut all: Vec<Arc<NestedField>> = meta_fields();
        all.extend(snapshot_fields(100));
        let mut props = HashMap::new();
        for (id, name, ty, attribute, tag) in fields {
            all.push(Arc::new(NestedField::optional(*id, *name, ty.clone())));
            props.insert(
                format!("{FIELD_PROPERTY}{name}"),
                serde_json::to_string(&FieldForm {
                    attribute: (*attribute).to_owned(),
                    tag: (*tag).to_owned(),
                })
                .unwrap(),
            );
        }
        let schema = Schema::builder().with_fields(all).build().unwrap();
        FieldMap::read(&schema, &props)
    }

    /// A table of the meta columns only, none of them with a form.
    fn bare_table() -> FieldMap {
        FieldMap::read(
            &Schema::builder()
                .with_fields(meta_fields())
                .build()
                .unwrap(),
            &HashMap::new(),
        )
    }

    fn s(v: &str) -> AttributeValue {
        AttributeValue::S(v.into())
    }

    #[test]
    fn new_attributes_become_new_nullable_fields_and_nulls_wait() {
        let schema = table_schema(&[item(&[("name", s("a")), ("gone", AttributeValue::Null)])]);
        let add = bare_table().missing(&schema);
        assert_eq!(add.len(), 1, "the all-null column waits: {add:?}");
        assert_eq!(add[0].0, "name");
        assert_eq!(add[0].1, Type::Primitive(PrimitiveType::String));
        assert_eq!(add[0].2.tag, "S");
    }

    #[test]
    fn snapshot_columns_are_meta_columns_that_older_tables_lack() {
        let schema = table_schema(&[item(&[("__snapshot", s("a"))])]);
        let older = bare_table();
        let names: Vec<String> = older
            .missing_snapshot_fields()
            .iter()
            .map(|f| f.name.clone())
            .collect();
        assert_eq!(names, SNAPSHOT_COLUMNS);
        let e = older.file_fields(&table_schema(&[])).unwrap_err();
        assert!(e.contains("no `__snapshot_id` column"), "{e}");

        let mut fields = meta_fields();
        fields.extend(snapshot_fields(9));
        let current = FieldMap::read(
            &Schema::builder().with_fields(fields).build().unwrap(),
            &HashMap::new(),
        );
        assert!(current.missing_snapshot_fields().is_empty());
        let add = current.missing(&schema);
        assert_eq!(add[0].0, "___snapshot", "an attribute cannot take the name");
        let (_, meta) = current.file_fields(&table_schema(&[])).unwrap();
        let tail: Vec<(&str, bool, &str)> = meta[META_COLUMNS.len()..]
            .iter()
            .map(|f| {
                let id = f.metadata()[FIELD_ID_KEY].as_str();
                (f.name().as_str(), f.is_nullable(), id)
            })
            .collect();
        assert_eq!(
            tail,
            [
                ("__snapshot_id", true, "9"),
                ("__snapshot_read_ms", true, "10"),
                ("__snapshot", true, "11")
            ]
        );
    }

    #[test]
    fn a_string_that_becomes_json_gets_a_new_field_so_no_value_changes_form() {
        let map = iceberg(&[(9, "v", Type::Primitive(PrimitiveType::String), "v", "S")]);
        let schema = table_schema(&[
            item(&[("v", s("a"))]),
            item(&[("v", AttributeValue::Bool(true))]),
        ]);
        let add = map.missing(&schema);
        assert_eq!(add.len(), 1, "{add:?}");
        assert_eq!(add[0].0, "v__json");
        assert_eq!(add[0].2.tag, "json");
    }

    /// Names Iceberg or its readers would refuse are not given: a `.`
    /// (a nested path in Iceberg), a name that differs from another only
    /// in case (Spark, Athena and Hive match names case-insensitively),
    /// the partition field's name. The attribute's own name stays in the
    /// field's form.
    #[test]
    fn new_field_names_are_ones_iceberg_and_its_readers_accept() {
        let map = bare_table();
        let schema = table_schema(&[item(&[
            ("order.date", s("2024-05-01")),
            ("Name", s("a")),
            ("name", s("b")),
            ("__OP", s("mine")),
            ("__source_day_ms", s("x")),
        ])]);
        let add = map.missing(&schema);
        let names: Vec<(&str, &str)> = add
            .iter()
            .map(|(name, _, form)| (name.as_str(), form.attribute.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("Name", "Name"),
                ("__OP__s", "__OP"),
                ("__source_day_ms__s", "__source_day_ms"),
                ("name__s", "name"),
                ("order_date", "order.date"),
            ]
        );
    }

    /// An attribute name a catalog would refuse (too long, several lines)
    /// gets a column name it takes, and a doc it takes; the form keeps the
    /// attribute's own name.
    #[test]
    fn long_or_multi_line_attribute_names_get_names_catalogs_take() {
        let map = bare_table();
        let long_a = format!("{}a", "é".repeat(150));
        let long_b = format!("{}b", "é".repeat(150));
        let schema = table_schema(&[item(&[
            (long_a.as_str(), s("1")),
            (long_b.as_str(), s("2")),
            ("two\nlines", s("3")),
        ])]);
        let add = map.missing(&schema);
        assert_eq!(add.len(), 3);
        for (name, _, form) in &add {
            assert!(name.len() <= MAX_NAME_BYTES, "{name}");
            assert!(!name.chars().any(char::is_control), "{name:?}");
            let doc = column_doc(form);
            assert!(doc.chars().count() <= 255 && !doc.contains('\n'), "{doc}");
        }
        let names: Vec<&str> = add.iter().map(|(n, _, _)| n.as_str()).collect();
        assert!(names.contains(&"two_lines"), "{names:?}");
        assert_ne!(names[0], names[1], "long names sharing a start stay apart");
        let attributes: Vec<&str> = add.iter().map(|(_, _, f)| f.attribute.as_str()).collect();
        assert!(attributes.contains(&long_a.as_str()) && attributes.contains(&long_b.as_str()));
        // Short names are as they were.
        assert_eq!(catalog_name("order.date"), "order_date");
        assert_eq!(catalog_name("Name"), "Name");
    }

    /// A field someone else added (in Spark, say) keeps its name: the
    /// attribute of the same name gets a field of its own.
    #[test]
    fn a_field_added_by_someone_else_is_left_alone_and_its_name_not_taken() {
        let mut fields = meta_fields();
        fields.push(Arc::new(NestedField::optional(
            50,
            "color",
            Type::Primitive(PrimitiveType::Int),
        )));
        let map = FieldMap::read(
            &Schema::builder().with_fields(fields).build().unwrap(),
            &HashMap::new(),
        );
        assert!(map.earlier_fields().is_empty());
        let add = map.missing(&table_schema(&[item(&[("color", s("red"))])]));
        assert_eq!(add.len(), 1, "{add:?}");
        assert_eq!(add[0].0, "color__s");
        assert_eq!(add[0].2.attribute, "color");
    }

    #[test]
    fn a_boolean_that_becomes_json_gets_a_second_string_field() {
        let map = iceberg(&[(9, "v", Type::Primitive(PrimitiveType::Boolean), "v", "BOOL")]);
        let schema = table_schema(&[
            item(&[("v", AttributeValue::Bool(true))]),
            item(&[("v", s("x"))]),
        ]);
        let add = map.missing(&schema);
        assert_eq!(add.len(), 1);
        assert_eq!(add[0].0, "v__json");
        assert_eq!(add[0].2.attribute, "v");
    }

    #[test]
    fn a_restart_resumes_the_forms_it_recorded() {
        let map = iceberg(&[
            (9, "v", Type::Primitive(PrimitiveType::Boolean), "v", "BOOL"),
            (
                10,
                "v__json",
                Type::Primitive(PrimitiveType::String),
                "v",
                "json",
            ),
            (11, "n", Type::Primitive(PrimitiveType::String), "n", "N"),
        ]);
        let earlier = map.earlier_fields();
        let arrow = arrow_schema::Schema::new(earlier);
        let schema = TableSchema::resume("t", None, NumbersMode::String, &[&arrow]).unwrap();
        let types: Vec<_> = schema
            .columns()
            .iter()
            .map(|c| (c.attribute.as_str(), c.ty.clone()))
            .collect();
        assert_eq!(
            types,
            [("v", ColumnType::Json), ("n", ColumnType::DecimalString)]
        );
        let (fields, meta) = map.file_fields(&schema).unwrap();
        let v = fields[0].as_ref().unwrap();
        assert_eq!(v.name(), "v__json");
        assert_eq!(v.metadata()[FIELD_ID_KEY], "10");
        assert_eq!(meta.len(), META_COLUMNS.len() + SNAPSHOT_COLUMNS.len());
    }

    #[test]
    fn nested_fields_carry_their_ids() {
        let element = Arc::new(NestedField::list_element(
            12,
            Type::Primitive(PrimitiveType::String),
            false,
        ));
        let map = iceberg(&[(11, "tags", Type::List(ListType::new(element)), "tags", "SS")]);
        let schema = table_schema(&[item(&[("tags", AttributeValue::Ss(vec!["a".into()]))])]);
        assert!(map.missing(&schema).is_empty());
        let (fields, _) = map.file_fields(&schema).unwrap();
        let DataType::List(item) = fields[0].as_ref().unwrap().data_type() else {
            panic!("a list")
        };
        assert_eq!(item.metadata()[FIELD_ID_KEY], "12");
    }
}
