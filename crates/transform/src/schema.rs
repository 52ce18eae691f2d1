//! A table's flat-row schema: declared columns, inferred columns widened as
//! data arrives, and the position columns every row carries.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, SchemaRef};
use dynamo_cdc_core::{AttributeValue, Change, Item, Text};

use crate::column::{ColumnType, NumbersMode, attribute_name};
use crate::declared::{AttrPath, DeclaredSchema, fits};
use crate::infer::{holds, infer, widen};

/// The position and provenance columns of a flat row, after the attributes.
pub const META_COLUMNS: [&str; 8] = [
    "__op",
    "__table",
    "__shard_id",
    "__sequence_number",
    "__event_id",
    "__source_ts_ms",
    "__deleted",
    "__ttl_delete",
];

/// The columns a snapshot row adds after [`META_COLUMNS`] (snapshot files
/// only): the snapshot's id, when the item was read, and its marker
/// (`first`, `true` or `last`, as Debezium's `source.snapshot`).
pub const SNAPSHOT_COLUMNS: [&str; 3] = ["__snapshot_id", "__snapshot_read_ms", "__snapshot"];

/// One attribute column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    /// The DynamoDB attribute name.
    pub attribute: String,
    /// The column name: the attribute name unless it would clash.
    pub name: String,
    /// The layout.
    pub ty: ColumnType,
    /// True when `schemas/<table>.avsc` declares it (never widened).
    pub declared: bool,
    /// The layouts an inferred column had before `ty`, oldest first (never
    /// `Null`). Arrow files each have one layout; an Avro schema keeps
    /// these as branches of the field's union, so that the schema widened
    /// still reads what was written before (see [`crate::avro`]).
    pub former: Vec<ColumnType>,
}

impl Column {
    /// Takes `ty` as the layout from now on, keeping the one it replaces.
    fn change_form(&mut self, ty: ColumnType) {
        if ty == self.ty {
            return;
        }
        let old = std::mem::replace(&mut self.ty, ty);
        if old != ColumnType::Null && !self.former.contains(&old) {
            self.former.push(old);
        }
    }
}

/// The flat-row schema of one table.
#[derive(Clone, Debug)]
pub struct TableSchema {
    table: String,
    columns: Vec<Column>,
    /// Attribute names and their column indices in name order, for merging
    /// with row images (which are sorted by name). `Text`s, like the row
    /// images' names, compare without a `memcmp` call.
    sorted: Vec<(Text, usize)>,
    mode: NumbersMode,
    version: u64,
    arrow: SchemaRef,
    /// `arrow` with [`SNAPSHOT_COLUMNS`].
    arrow_snapshot: SchemaRef,
    /// Whether any column is declared (most tables have no `.avsc`).
    any_declared: bool,
    /// Per column, the union branch its Avro values are written in (see
    /// [`crate::avro`]): set once per version, not per value.
    avro_branches: Vec<i64>,
    /// Widening keeps every former layout readable as an Avro union branch
    /// ([`TableSchema::for_avro_unions`]).
    avro_unions: bool,
}

impl TableSchema {
    /// A schema with the declared columns, if any, and nothing inferred yet.
    pub fn new(table: &str, declared: Option<&DeclaredSchema>, mode: NumbersMode) -> Self {
        let mut s = TableSchema {
            table: table.to_owned(),
            columns: Vec::new(),
            sorted: Vec::new(),
            mode,
            version: 0,
            arrow: Arc::new(Schema::empty()),
            arrow_snapshot: Arc::new(Schema::empty()),
            any_declared: false,
            avro_branches: Vec::new(),
            avro_unions: false,
        };
        for (attribute, ty) in declared.map(|d| d.columns.as_slice()).unwrap_or_default() {
            s.push(attribute, ty.clone(), true);
        }
        s.rebuild();
        s
    }

    /// Continues from the schemas of earlier output (the newest file of each
    /// shard written by a previous run), widened together, so a restart does
    /// not narrow a column again. Declared columns keep their declaration.
    ///
    /// # Errors
    /// When a field lacks the `dynamodb.type` metadata this crate writes.
    pub fn resume(
        table: &str,
        declared: Option<&DeclaredSchema>,
        mode: NumbersMode,
        earlier: &[&Schema],
    ) -> Result<Self, String> {
        let mut columns = Vec::new();
        for schema in earlier {
            for field in schema.fields() {
                let name = field.name().as_str();
                if META_COLUMNS.contains(&name) || SNAPSHOT_COLUMNS.contains(&name) {
                    continue;
                }
                columns.push((
                    attribute_name(field).to_owned(),
                    ColumnType::from_field(field)?,
                ));
            }
        }
        Ok(TableSchema::resume_columns(table, declared, mode, &columns))
    }

    /// Continues from earlier output's columns (attribute and layout, in
    /// their order; an attribute met twice is widened to hold both), as
    /// [`TableSchema::resume`] does from files: for a topic, the columns of
    /// the value schema registered last ([`crate::avro::registered_columns`]).
    pub fn resume_columns(
        table: &str,
        declared: Option<&DeclaredSchema>,
        mode: NumbersMode,
        columns: &[(String, ColumnType)],
    ) -> Self {
        let mut s = TableSchema::new(table, declared, mode);
        for (attribute, ty) in columns {
            // Once per column at start: a scan of the columns will do.
            match s.columns.iter().position(|c| c.attribute == *attribute) {
                Some(i) if s.columns[i].declared => {}
                Some(i) => {
                    let wider = widen(&s.columns[i].ty, ty);
                    s.columns[i].change_form(wider);
                }
                None => s.push(attribute, ty.clone(), false),
            }
        }
        s.rebuild();
        s
    }

    /// This schema, widening so that each version's Avro schema reads what
    /// the one before wrote, for a schema registry checking BACKWARD
    /// compatibility: a layout that would replace another of the same Avro
    /// kind the new one cannot read (a set of integers taking a fraction:
    /// `array<long>` to `array<string>`, and a union holds one array)
    /// becomes DynamoDB-JSON text instead, a `string` branch beside the
    /// former array. Files, one layout each, keep the typed set.
    #[must_use]
    pub fn for_avro_unions(mut self) -> Self {
        self.avro_unions = true;
        self
    }

    /// Adds a column, named after its attribute unless a column of the
    /// bridge's own (`__op`) or another column has that name: underscores
    /// go in front until the name is free. (Names that differ only in case
    /// are told apart in Arrow fields only: see [`arrow_names`].)
    fn push(&mut self, attribute: &str, ty: ColumnType, declared: bool) {
        let mut name = attribute.to_owned();
        while META_COLUMNS.contains(&name.as_str())
            || SNAPSHOT_COLUMNS.contains(&name.as_str())
            || self.columns.iter().any(|c| c.name == name)
        {
            name.insert(0, '_');
        }
        self.any_declared |= declared;
        self.columns.push(Column {
            attribute: attribute.to_owned(),
            name,
            ty,
            declared,
            former: Vec::new(),
        });
    }

    /// Checks a row image against the declared columns, then widens the
    /// inferred ones to hold it. A row that does not fit changes nothing.
    ///
    /// # Errors
    /// A message naming the attribute that does not fit its declaration.
    pub fn admit(&mut self, item: &Item) -> Result<(), String> {
        self.admit_all(&[item])
    }

    /// [`TableSchema::admit`] for the row a change becomes (its
    /// [`Change::row_image`]), whose key attributes must keep telling items
    /// apart: a key number written as a double (`numbers = "double"`, or a
    /// key declared `double` or `float`) that is not its double's shortest
    /// decimal is refused (`9007199254740993`, which would read
    /// `9007199254740992`; `1152921504606846976`, whose exact double
    /// `1152921504606847000` shares), as two items would share one key in
    /// the rows and a latest-state view would merge them.
    ///
    /// # Errors
    /// A message naming the attribute that does not fit, or the key that
    /// would be rounded.
    pub fn admit_row(&mut self, change: &Change) -> Result<(), String> {
        // Without `numbers = "double"` only a declared column is a double.
        let may_round = self.mode == NumbersMode::Double || self.any_declared;
        for (name, value) in change.keys.iter().filter(|_| may_round) {
            let AttributeValue::N(n) = value else {
                continue;
            };
            // Only a double column rounds: a declared or widened one of
            // another layout keeps the number as it is, and a new column
            // is a double only under `numbers = "double"`.
            let column = self.columns.iter().find(|c| c.attribute == name.as_str());
            let double = column.map_or(self.mode == NumbersMode::Double, |c| {
                c.ty == ColumnType::Float64
            });
            if double && n.to_f64_distinct().is_none() {
                let why = if column.is_some_and(|c| c.declared) {
                    "its declared double"
                } else {
                    "numbers = \"double\""
                };
                return Err(format!(
                    "key attribute `{}` is {n}, which {why} would write as {}: two items \
                     would share one key in the rows; declare the attribute a long, a decimal \
                     or a string in the table's schema{}",
                    AttrPath::Attribute(name),
                    n.to_f64(),
                    if self.mode == NumbersMode::Double {
                        ", or use numbers = \"auto\""
                    } else {
                        ""
                    }
                ));
            }
        }
        self.admit(change.row_image())
    }

    /// [`TableSchema::admit`] for images written together (a change's old
    /// and new images in one message): each is checked before any widens
    /// the schema, so when one does not fit, nothing changes. Admitted one
    /// at a time, a rejected new image would leave the columns widened by
    /// an old image that no message carries.
    ///
    /// # Errors
    /// A message naming the attribute that does not fit its declaration.
    pub fn admit_all(&mut self, items: &[&Item]) -> Result<(), String> {
        if self.any_declared {
            for item in items {
                self.check_declared(item)?;
            }
        }
        for item in items {
            self.widen_to(item);
        }
        Ok(())
    }

    fn check_declared(&self, item: &Item) -> Result<(), String> {
        let mut next = 0;
        for (attribute, value) in item {
            if let Some(i) = self.seek(&mut next, attribute) {
                let column = &self.columns[i];
                if column.declared {
                    fits(value, &column.ty, AttrPath::Attribute(attribute))?;
                }
            }
        }
        Ok(())
    }

    /// Widens the inferred columns to hold `item`, adding those it lacks.
    fn widen_to(&mut self, item: &Item) {
        let mut changed = false;
        let mut next = 0;
        for (attribute, value) in item {
            match self.seek(&mut next, attribute) {
                Some(i) => {
                    let column = &mut self.columns[i];
                    if column.declared || holds(&column.ty, value, self.mode) {
                        continue;
                    }
                    let mut widened = widen(&column.ty, &infer(value, self.mode));
                    if self.avro_unions && crate::avro::replaces_branch(&column.ty, &widened) {
                        widened = ColumnType::Json;
                    }
                    if widened != column.ty {
                        column.change_form(widened);
                        changed = true;
                    }
                }
                None => {
                    // Added after the sorted columns: the merge goes on
                    // over those, and they are sorted again below.
                    let ty = infer(value, self.mode);
                    self.push(attribute, ty, false);
                    changed = true;
                }
            }
        }
        if changed {
            self.version += 1;
            self.rebuild();
        }
    }

    /// The column of `name`, the next of a row image's names in order:
    /// `next` (0 for a row's first name) moves along the sorted columns,
    /// so a row is matched in one merge instead of a lookup per name.
    fn seek(&self, next: &mut usize, name: &Text) -> Option<usize> {
        // Most rows hold most columns: the match is tested first, which a
        // length alone often settles, and names are ordered only on a miss.
        loop {
            let (column, i) = self.sorted.get(*next)?;
            if column == name {
                *next += 1;
                return Some(*i);
            }
            if column > name {
                return None;
            }
            *next += 1;
        }
    }

    fn rebuild(&mut self) {
        self.avro_branches = (self.columns.iter())
            .map(|c| crate::avro::branches(&c.ty, &c.former).len() as i64)
            .collect();
        self.sorted = (self.columns.iter().enumerate())
            .map(|(i, c)| (Text::new(&c.attribute), i))
            .collect();
        self.sorted.sort_unstable();
        let mut fields: Vec<Field> = (self.columns.iter().zip(arrow_names(&self.columns)))
            .map(|(c, name)| c.ty.field(&name, Some(&c.attribute)))
            .collect();
        fields.extend(meta_fields());
        let meta = HashMap::from([("dynamodb.table".to_owned(), self.table.clone())]);
        self.arrow = Arc::new(Schema::new_with_metadata(fields.clone(), meta.clone()));
        fields.extend([
            Field::new(SNAPSHOT_COLUMNS[0], DataType::Utf8, false),
            Field::new(SNAPSHOT_COLUMNS[1], DataType::Int64, false),
            Field::new(SNAPSHOT_COLUMNS[2], DataType::Utf8, false),
        ]);
        self.arrow_snapshot = Arc::new(Schema::new_with_metadata(fields, meta));
    }

    /// Calls `found` with each column's index and `item`'s value for it
    /// (`None` where the item lacks the attribute), in name order. The
    /// item and the columns are both sorted by name: one merge, no lookup.
    #[inline]
    pub(crate) fn each_value<'i>(
        &self,
        item: &'i Item,
        mut found: impl FnMut(usize, Option<&'i AttributeValue>),
    ) {
        let mut attrs = item.iter().peekable();
        for (name, ci) in &self.sorted {
            // Most rows hold most columns: test for the match first, which
            // a length alone often settles, and order names only on a miss.
            let value = loop {
                if let Some((_, v)) = attrs.next_if(|(k, _)| *k == name) {
                    break Some(v);
                }
                if attrs.next_if(|(k, _)| *k < name).is_none() {
                    break None;
                }
            };
            found(*ci, value);
        }
    }

    /// The union branch column `i`'s Avro values are written in.
    pub(crate) fn avro_branch(&self, i: usize) -> i64 {
        self.avro_branches[i]
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The attribute columns, in order.
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// Grows by one on every change; a writer holding an older version must
    /// start a new file.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The Arrow schema: attribute columns, then [`META_COLUMNS`].
    pub fn arrow_schema(&self) -> SchemaRef {
        self.arrow.clone()
    }

    /// The Arrow schema of snapshot rows: [`TableSchema::arrow_schema`],
    /// then [`SNAPSHOT_COLUMNS`].
    pub fn snapshot_arrow_schema(&self) -> SchemaRef {
        self.arrow_snapshot.clone()
    }

    /// How numbers are laid out in inferred columns.
    pub fn numbers_mode(&self) -> NumbersMode {
        self.mode
    }
}

/// The Arrow field name of each column: its name, with underscores in front
/// while another column (or one of the bridge's) has it whatever the case:
/// Spark, Athena and Hive match column names case-insensitively and refuse
/// a file holding both `Name` and `name`. Avro and JSON, read
/// case-sensitively, keep the column names as they are.
fn arrow_names(columns: &[Column]) -> Vec<String> {
    let meta = META_COLUMNS.iter().chain(SNAPSHOT_COLUMNS.iter());
    let mut taken: Vec<String> = meta.map(|m| m.to_lowercase()).collect();
    columns
        .iter()
        .map(|c| {
            let mut name = c.name.clone();
            while taken.contains(&name.to_lowercase()) {
                name.insert(0, '_');
            }
            taken.push(name.to_lowercase());
            name
        })
        .collect()
}

fn meta_fields() -> [Field; 8] {
    [
        Field::new("__op", DataType::Utf8, false),
        Field::new("__table", DataType::Utf8, false),
        Field::new("__shard_id", DataType::Utf8, false),
        Field::new("__sequence_number", DataType::Utf8, false),
        Field::new("__event_id", DataType::Utf8, false),
        Field::new("__source_ts_ms", DataType::Int64, true),
        Field::new("__deleted", DataType::Boolean, false),
        Field::new("__ttl_delete", DataType::Boolean, false),
    ]
}
