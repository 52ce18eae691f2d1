//! Reaching the catalog, creating namespaces and tables, and committing
//! against the snapshot a writer checked.
//!
//! The Iceberg crate's `Transaction::commit` reloads the table and quietly
//! re-applies an append on top of whatever another writer committed in the
//! meantime. That is right for most writers, but not for one whose commit
//! carries positions: data another writer already committed would be added
//! twice. So commits go through [`Pinned`], a catalog that refuses to load a
//! table whose current snapshot is not the one the sink checked; the sink
//! then reloads, looks at what the other writer committed, and decides.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use iceberg::spec::{NestedField, Schema, TableMetadata, Transform, UnboundPartitionSpec};
use iceberg::table::Table;
use iceberg::{
    Catalog, CatalogBuilder, Error, ErrorKind, Namespace, NamespaceIdent, Result, TableCommit,
    TableCreation, TableIdent,
};
use iceberg_catalog_rest::{
    REST_CATALOG_PROP_URI, REST_CATALOG_PROP_WAREHOUSE, RestCatalogBuilder,
};
use iceberg_catalog_sql::{SQL_CATALOG_PROP_URI, SQL_CATALOG_PROP_WAREHOUSE, SqlCatalogBuilder};

use crate::columns::{meta_fields, snapshot_fields};
use crate::config::{CatalogKind, IcebergConfig};
use crate::sigv4::{Signer, SigningConfig, SigningProxy};

/// Milliseconds in a day: the width that truncates `__source_ts_ms` to the
/// start of its UTC day.
pub(crate) const DAY_MS: u32 = 86_400_000;

/// The partition field: the UTC day of `__source_ts_ms`, as the epoch
/// milliseconds of its midnight (Iceberg's `day` transform takes dates and
/// timestamps only; `truncate` on a long gives the same days).
pub(crate) const PARTITION_FIELD: &str = "__source_day_ms";

/// Connects to the configured catalog; a REST catalog with
/// `rest.sigv4-enabled` through a signing proxy.
///
/// # Errors
/// When the catalog cannot be reached or the URI is refused; with signing,
/// when no AWS region or credentials can be found.
pub(crate) async fn connect(
    config: &IcebergConfig,
    storage: Arc<dyn iceberg::io::StorageFactory>,
    warehouse_url: &str,
) -> Result<Connected> {
    match config.catalog {
        CatalogKind::Sql => {
            let mut props = properties(config);
            props.insert(
                SQL_CATALOG_PROP_URI.to_owned(),
                sql_uri(&config.catalog_uri)?,
            );
            props.insert(
                SQL_CATALOG_PROP_WAREHOUSE.to_owned(),
                warehouse_url.to_owned(),
            );
            let catalog = SqlCatalogBuilder::default()
                .with_storage_factory(storage)
                .load(&config.catalog_name, props)
                .await?;
            Ok(Connected {
                catalog: Arc::new(catalog),
                signing: None,
            })
        }
        CatalogKind::Rest => {
            let signing =
                SigningConfig::from_properties(&config.properties).map_err(|(key, reason)| {
                    Error::new(
                        ErrorKind::DataInvalid,
                        format!("sinks.iceberg.properties.{key}: {reason}"),
                    )
                })?;
            let signer = match signing {
                Some(signing) => Some(Signer::from_default_chain(&signing).await?),
                None => None,
            };
            rest(config, storage, signer).await
        }
    }
}

/// A catalog, and the signing proxy it reaches its endpoint through, if
/// any: the proxy runs as long as this is kept.
pub(crate) struct Connected {
    pub catalog: Arc<dyn Catalog>,
    pub signing: Option<SigningProxy>,
}

/// The configured catalog properties.
fn properties(config: &IcebergConfig) -> HashMap<String, String> {
    config
        .properties
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// A REST catalog at the configured endpoint; with a signer, reached
/// through a signing proxy (see [`sigv4`](crate::sigv4)).
pub(crate) async fn rest(
    config: &IcebergConfig,
    storage: Arc<dyn iceberg::io::StorageFactory>,
    signer: Option<Signer>,
) -> Result<Connected> {
    let mut props = properties(config);
    props
        .entry(REST_CATALOG_PROP_WAREHOUSE.to_owned())
        .or_insert_with(|| config.warehouse.clone());
    let builder = RestCatalogBuilder::default().with_storage_factory(storage);
    let Some(signer) = signer else {
        props.insert(REST_CATALOG_PROP_URI.to_owned(), config.catalog_uri.clone());
        let catalog = builder.load(&config.catalog_name, props).await?;
        return Ok(Connected {
            catalog: Arc::new(catalog),
            signing: None,
        });
    };
    let proxy = SigningProxy::start(&config.catalog_uri, signer).await?;
    props.insert(
        REST_CATALOG_PROP_URI.to_owned(),
        proxy.catalog_uri().to_owned(),
    );
    // Its own client, which goes straight to the proxy on loopback: the
    // default one would send it to an HTTP_PROXY from the environment.
    let client = reqwest_catalog::Client::builder()
        .no_proxy()
        .build()
        .map_err(|e| {
            Error::new(
                ErrorKind::Unexpected,
                "cannot build the catalog's HTTP client",
            )
            .with_source(e)
        })?;
    let catalog = builder
        .with_client(client)
        .load(&config.catalog_name, props)
        .await?;
    Ok(Connected {
        catalog: Arc::new(catalog),
        signing: Some(proxy),
    })
}

/// A sqlite URL opened read-write and created when missing (sqlx opens
/// read-write only by default), its directory created; other URLs as given.
fn sql_uri(uri: &str) -> Result<String> {
    let Some(path) = uri
        .strip_prefix("sqlite://")
        .or_else(|| uri.strip_prefix("sqlite:"))
    else {
        return Ok(uri.to_owned());
    };
    let file = path.split('?').next().unwrap_or_default();
    if let Some(dir) = std::path::Path::new(file).parent()
        && !dir.as_os_str().is_empty()
        && file != ":memory:"
    {
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::new(
                ErrorKind::Unexpected,
                format!("cannot create the catalog's directory {}", dir.display()),
            )
            .with_source(e)
        })?;
    }
    Ok(if uri.contains('?') {
        uri.to_owned()
    } else {
        format!("{uri}?mode=rwc")
    })
}

/// Creates the namespace when it is missing.
pub(crate) async fn ensure_namespace(catalog: &dyn Catalog, ns: &NamespaceIdent) -> Result<()> {
    if catalog.namespace_exists(ns).await? {
        return Ok(());
    }
    match catalog.create_namespace(ns, HashMap::new()).await {
        Ok(_) => Ok(()),
        // Another writer created it meanwhile.
        Err(e) if e.kind() == ErrorKind::NamespaceAlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Loads the table, creating it (meta and snapshot columns only,
/// partitioned by day) when it is missing.
pub(crate) async fn ensure_table(
    catalog: &dyn Catalog,
    ident: &TableIdent,
    location: Option<String>,
    dynamodb_table: &str,
) -> Result<Table> {
    if !catalog.table_exists(ident).await? {
        let mut fields = meta_fields();
        fields.extend(snapshot_fields(field_after(&fields)));
        let creation = table_creation(ident, location, dynamodb_table, fields)?;
        match catalog.create_table(ident.namespace(), creation).await {
            Ok(table) => return Ok(table),
            // Another writer created it meanwhile.
            Err(e) if e.kind() == ErrorKind::TableAlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    let table = catalog.load_table(ident).await?;
    check_partitioning(ident, table.metadata())?;
    Ok(table)
}

/// Refuses a table partitioned otherwise than this sink's tables (the day
/// of `__source_ts_ms`, as `truncate[86400000]`): every data file records
/// that day as its partition value, and under another spec engines would
/// skip files holding the rows a query asks for. A table created
/// beforehand, or whose partitioning was changed, is such a table.
///
/// # Errors
/// `DataInvalid`, naming the table's partitioning.
pub(crate) fn check_partitioning(ident: &TableIdent, metadata: &TableMetadata) -> Result<()> {
    let spec = metadata.default_partition_spec();
    let source = metadata
        .current_schema()
        .field_by_name("__source_ts_ms")
        .map(|f| f.id);
    let ours = match spec.fields() {
        [field] => {
            Some(field.source_id) == source && field.transform == Transform::Truncate(DAY_MS)
        }
        _ => false,
    };
    if ours {
        return Ok(());
    }
    let fields: Vec<String> = spec
        .fields()
        .iter()
        .map(|f| format!("{}({})", f.transform, f.name))
        .collect();
    Err(Error::new(
        ErrorKind::DataInvalid,
        format!(
            "table {} is partitioned by [{}]; this sink writes data files partitioned by the day \
             of __source_ts_ms only (truncate[{DAY_MS}]): let the sink create the table, or \
             choose another table name",
            ident,
            fields.join(", ")
        ),
    ))
}

/// A new table of `fields`, partitioned by the day of `__source_ts_ms`.
///
/// # Errors
/// When `fields` lack `__source_ts_ms` or do not make a schema.
pub(crate) fn table_creation(
    ident: &TableIdent,
    location: Option<String>,
    dynamodb_table: &str,
    fields: Vec<Arc<NestedField>>,
) -> Result<TableCreation> {
    let schema = Schema::builder().with_fields(fields).build()?;
    let source_id = schema
        .field_by_name("__source_ts_ms")
        .map(|f| f.id)
        .ok_or_else(|| Error::new(ErrorKind::Unexpected, "no __source_ts_ms field"))?;
    let spec = UnboundPartitionSpec::builder()
        .add_partition_field(source_id, PARTITION_FIELD, Transform::Truncate(DAY_MS))?
        .build();
    let properties = [
        ("write.format.default", "parquet"),
        ("write.parquet.compression-codec", "zstd"),
        ("dynamo-cdc.table", dynamodb_table),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()));
    Ok(TableCreation::builder()
        .name(ident.name().to_owned())
        .location_opt(location)
        .schema(schema)
        .partition_spec(spec)
        .properties(properties)
        .build())
}

/// The id after the highest of `fields`.
fn field_after(fields: &[Arc<NestedField>]) -> i32 {
    fields.iter().map(|f| f.id).max().unwrap_or(0) + 1
}

/// A catalog that commits only on top of one snapshot (see the module docs).
#[derive(Debug)]
pub(crate) struct Pinned {
    pub inner: Arc<dyn Catalog>,
    /// The current snapshot the writer checked (`None`: no snapshot yet).
    pub snapshot: Option<i64>,
}

/// The error [`Pinned`] answers with when another writer committed.
pub(crate) const MOVED: &str = "the table moved on: another writer committed since it was checked";

#[async_trait]
impl Catalog for Pinned {
    async fn list_namespaces(
        &self,
        parent: Option<&NamespaceIdent>,
    ) -> Result<Vec<NamespaceIdent>> {
        self.inner.list_namespaces(parent).await
    }
    async fn create_namespace(
        &self,
        namespace: &NamespaceIdent,
        properties: HashMap<String, String>,
    ) -> Result<Namespace> {
        self.inner.create_namespace(namespace, properties).await
    }
    async fn get_namespace(&self, namespace: &NamespaceIdent) -> Result<Namespace> {
        self.inner.get_namespace(namespace).await
    }
    async fn namespace_exists(&self, namespace: &NamespaceIdent) -> Result<bool> {
        self.inner.namespace_exists(namespace).await
    }
    async fn update_namespace(
        &self,
        namespace: &NamespaceIdent,
        properties: HashMap<String, String>,
    ) -> Result<()> {
        self.inner.update_namespace(namespace, properties).await
    }
    async fn drop_namespace(&self, namespace: &NamespaceIdent) -> Result<()> {
        self.inner.drop_namespace(namespace).await
    }
    async fn list_tables(&self, namespace: &NamespaceIdent) -> Result<Vec<TableIdent>> {
        self.inner.list_tables(namespace).await
    }
    async fn create_table(
        &self,
        namespace: &NamespaceIdent,
        creation: TableCreation,
    ) -> Result<Table> {
        self.inner.create_table(namespace, creation).await
    }
    async fn load_table(&self, table: &TableIdent) -> Result<Table> {
        let loaded = self.inner.load_table(table).await?;
        let current = loaded.metadata().current_snapshot_id();
        if current != self.snapshot {
            return Err(Error::new(ErrorKind::CatalogCommitConflicts, MOVED).with_retryable(false));
        }
        Ok(loaded)
    }
    async fn drop_table(&self, table: &TableIdent) -> Result<()> {
        self.inner.drop_table(table).await
    }
    async fn purge_table(&self, table: &TableIdent) -> Result<()> {
        self.inner.purge_table(table).await
    }
    async fn table_exists(&self, table: &TableIdent) -> Result<bool> {
        self.inner.table_exists(table).await
    }
    async fn rename_table(&self, src: &TableIdent, dest: &TableIdent) -> Result<()> {
        self.inner.rename_table(src, dest).await
    }
    async fn register_table(&self, table: &TableIdent, metadata_location: String) -> Result<Table> {
        self.inner.register_table(table, metadata_location).await
    }
    async fn update_table(&self, commit: TableCommit) -> Result<Table> {
        self.inner.update_table(commit).await
    }
}

/// Whether an error from the catalog or the Iceberg crate may pass: the
/// catalog or store unreachable, a lost race, throttling. Bad input and
/// unsupported features do not.
pub(crate) fn is_transient(e: &Error) -> bool {
    if e.retryable() {
        return true;
    }
    if store_refuses(e) || catalog_refuses(e) {
        return false;
    }
    !matches!(
        e.kind(),
        ErrorKind::DataInvalid
            | ErrorKind::FeatureUnsupported
            | ErrorKind::PreconditionFailed
            | ErrorKind::NamespaceNotFound
            | ErrorKind::TableNotFound
    )
}

/// Whether a REST catalog answered with a status that will not change on
/// its own: a request it cannot take (400, 405, 406, 413, 415, 422, ...,
/// say a table name the catalog does not allow). The REST client reports
/// statuses it does not handle itself as its generic kind, with the status
/// in the error's context (part of its text). Left passing: 408, 409, 425
/// and 429, and 401 and 403, by which OAuth2 and SigV4 credentials that
/// expired are renewed.
fn catalog_refuses(e: &Error) -> bool {
    let text = e.to_string();
    let Some(at) = text.find("status: ") else {
        return false;
    };
    let Some(status) = text[at + "status: ".len()..]
        .get(..3)
        .and_then(|s| s.parse::<u16>().ok())
    else {
        return false;
    };
    (400..500).contains(&status) && ![401, 403, 408, 409, 425, 429].contains(&status)
}

/// Whether `e` comes from an object store that will keep refusing: access
/// denied, no such bucket, or settings no client can be built from. Such
/// failures reach the Iceberg crate from our storage as its generic kind,
/// which on its own would read as "may pass", and the run would wait on
/// them for ever instead of stopping with the reason.
fn store_refuses(e: &Error) -> bool {
    use dynamo_cdc_object_store::FailureClass;
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        if let Some(store) = c.downcast_ref::<object_store::Error>() {
            return matches!(
                dynamo_cdc_object_store::classify(store),
                FailureClass::Denied | FailureClass::NoBucket | FailureClass::Settings
            );
        }
        cause = c.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sqlite_catalog_is_created_when_missing() {
        let dir = tempfile::tempdir().unwrap();
        let uri = format!("sqlite://{}/sub/catalog.db", dir.path().display());
        assert_eq!(sql_uri(&uri).unwrap(), format!("{uri}?mode=rwc"));
        assert!(dir.path().join("sub").is_dir());
        let given = "sqlite://c.db?mode=ro";
        assert_eq!(sql_uri(given).unwrap(), given);
        let pg = "postgres://u@h/db";
        assert_eq!(sql_uri(pg).unwrap(), pg);
    }

    #[test]
    fn a_store_that_refuses_access_or_has_no_bucket_stops_the_run() {
        let store = |body: &str| object_store::Error::Generic {
            store: "S3",
            source: body.to_owned().into(),
        };
        let wrapped = |e: object_store::Error| {
            // As storage.rs hands it over, then as the Iceberg crate may
            // wrap it again with its own context.
            let inner = Error::new(ErrorKind::Unexpected, "cannot write s3://b/m.json")
                .with_source(e)
                .with_retryable(false);
            Error::new(ErrorKind::Unexpected, "failed to write metadata").with_source(inner)
        };
        assert!(!is_transient(&wrapped(store(
            "403 <Code>AccessDenied</Code>"
        ))));
        assert!(!is_transient(&wrapped(store(
            "404 <Code>NoSuchBucket</Code>"
        ))));
        assert!(is_transient(&wrapped(store("503 <Code>SlowDown</Code>"))));
        assert!(is_transient(&Error::new(
            ErrorKind::Unexpected,
            "connection reset"
        )));
        assert!(!is_transient(&Error::new(ErrorKind::TableNotFound, "t")));
    }

    /// As the REST client reports a status it does not handle itself.
    #[test]
    fn a_rest_catalog_refusing_a_request_stops_the_run_and_throttling_does_not() {
        let answered = |status: &str| {
            Error::new(
                ErrorKind::Unexpected,
                "Received response with unexpected status code",
            )
            .with_context("status", status)
            .with_context("headers", "{}")
        };
        for refused in [
            "400 Bad Request",
            "405 Method Not Allowed",
            "422 Unprocessable Entity",
        ] {
            assert!(!is_transient(&answered(refused)), "{refused}");
        }
        for passing in [
            "429 Too Many Requests",
            "408 Request Timeout",
            "401 Unauthorized",
            "403 Forbidden",
            "503 Service Unavailable",
        ] {
            assert!(is_transient(&answered(passing)), "{passing}");
        }
    }

    #[test]
    fn a_table_partitioned_otherwise_is_refused_naming_its_partitioning() {
        let ident = TableIdent::from_strs(["cdc", "orders"]).unwrap();
        let mut fields = meta_fields();
        fields.extend(snapshot_fields(field_after(&fields)));
        let ours =
            || table_creation(&ident, Some("/w/orders".into()), "orders", fields.clone()).unwrap();
        let metadata = |creation: TableCreation| {
            iceberg::spec::TableMetadataBuilder::from_table_creation(creation)
                .unwrap()
                .build()
                .unwrap()
                .metadata
        };
        check_partitioning(&ident, &metadata(ours())).unwrap();
        let source = ours().schema.field_by_name("__source_ts_ms").unwrap().id;
        let by_hour = TableCreation {
            partition_spec: Some(
                UnboundPartitionSpec::builder()
                    .add_partition_field(source, "hour", Transform::Truncate(3_600_000))
                    .unwrap()
                    .build(),
            ),
            ..ours()
        };
        let e = check_partitioning(&ident, &metadata(by_hour)).unwrap_err();
        assert!(!is_transient(&e));
        assert!(
            e.to_string()
                .contains("table cdc.orders is partitioned by [truncate[3600000](hour)]"),
            "{e}"
        );
    }
}
