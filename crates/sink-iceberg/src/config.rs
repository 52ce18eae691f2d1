//! `[sinks.iceberg]`: the catalog, the warehouse, the table names and how
//! often data is committed. Every default is defined here.

use std::collections::BTreeMap;

use dynamo_cdc_core::ConfigError;
use dynamo_cdc_object_store::{Location, Scheme, StoreOptions, StoreUrl};
use serde::Deserialize;

use crate::sigv4::{SIGV4_ENABLED, SigningConfig};

/// Which kind of catalog holds the tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CatalogKind {
    /// A SQL database (sqlite file or Postgres) holding each table's
    /// current metadata location: the embedded default.
    Sql,
    /// An Iceberg REST catalog (Polaris, Nessie, Gravitino, Unity, ...).
    Rest,
}

/// Where the sink writes table files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warehouse {
    /// A local directory or a bucket prefix. A SQL catalog's new tables go
    /// below it; a REST catalog places tables itself, in any bucket of the
    /// same store, reached with the same options.
    Path(Location),
    /// An S3 table bucket (`arn:aws:s3tables:...`): its catalog gives every
    /// table a bucket of its own, reached with `options`.
    TableBucket {
        /// The table bucket's ARN, the REST catalog's `warehouse`.
        arn: String,
        /// Region (the ARN's unless set) and endpoint of the table buckets.
        options: StoreOptions,
    },
}

/// The region of an S3 table bucket ARN,
/// `arn:<partition>:s3tables:<region>:<account>:bucket/<name>`, or `None`
/// when `arn` is not one.
fn table_bucket_region(arn: &str) -> Option<&str> {
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(partition), Some("s3tables"), Some(region), Some(account), Some(res)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    let name = res.strip_prefix("bucket/")?;
    let valid = partition.starts_with("aws")
        && !region.is_empty()
        && region
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && account.len() == 12
        && account.chars().all(|c| c.is_ascii_digit())
        && !name.is_empty()
        && !name.contains('/');
    valid.then_some(region)
}

/// How the sink reaches its catalog and lays out its tables.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IcebergConfig {
    /// `sql` or `rest`.
    #[serde(default = "defaults::catalog")]
    pub catalog: CatalogKind,
    /// `sql`: a `sqlite://path` or `postgres://...` URL; `rest`: the
    /// catalog's HTTP endpoint.
    pub catalog_uri: String,
    /// The catalog's name (a SQL catalog stores it beside every table, so
    /// readers must use the same).
    #[serde(default = "defaults::catalog_name")]
    pub catalog_name: String,
    /// Where table files go: a local directory or an `s3://`, `gs://` or
    /// `az://` URL; for S3 Tables, the table bucket's ARN. It is also the
    /// REST catalog's `warehouse` unless `properties.warehouse` is set.
    pub warehouse: String,
    /// S3 region of the warehouse (else the AWS environment).
    #[serde(default)]
    pub region: Option<String>,
    /// S3-compatible endpoint of the warehouse (MinIO, moto, LocalStack).
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// The namespace the tables are created in (dots separate levels).
    #[serde(default = "defaults::namespace")]
    pub namespace: String,
    /// The table name template; `{table}` is the DynamoDB table's name.
    #[serde(default = "defaults::table")]
    pub table: String,
    /// How often the data files written are committed, in milliseconds.
    #[serde(default = "defaults::commit_interval_ms")]
    pub commit_interval_ms: u64,
    /// A data file is closed (and waits for the next commit) once it is
    /// about this large, in compressed bytes.
    #[serde(default = "defaults::max_file_bytes")]
    pub max_file_bytes: u64,
    /// Rows per row group.
    #[serde(default = "defaults::row_group_rows")]
    pub row_group_rows: usize,
    /// Encoded bytes per row group: a row group closes at this size or at
    /// `row_group_rows`, whichever comes first. An open row group is held
    /// in memory, so this bounds a data file's memory by bytes.
    #[serde(default = "defaults::row_group_bytes")]
    pub row_group_bytes: usize,
    /// zstd level, 1 to 22.
    #[serde(default = "defaults::zstd_level")]
    pub zstd_level: i32,
    /// Catalog properties passed as they are (REST: `credential`, `token`,
    /// `oauth2-server-uri`, `scope`, `header.<name>`, ...). For AWS catalogs
    /// (Glue, S3 Tables), `rest.sigv4-enabled = "true"` signs every request
    /// with SigV4, for `rest.signing-name` (default `glue`) and
    /// `rest.signing-region` (default: the AWS SDK's region).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

mod defaults {
    use super::CatalogKind;

    pub(super) fn catalog() -> CatalogKind {
        CatalogKind::Sql
    }
    pub(super) fn catalog_name() -> String {
        "dynamo_cdc".to_owned()
    }
    pub(super) fn namespace() -> String {
        "cdc".to_owned()
    }
    pub(super) fn table() -> String {
        "{table}".to_owned()
    }
    pub(super) fn commit_interval_ms() -> u64 {
        60_000
    }
    pub(super) fn max_file_bytes() -> u64 {
        256 << 20
    }
    pub(super) fn row_group_rows() -> usize {
        131_072
    }
    pub(super) fn row_group_bytes() -> usize {
        8 << 20
    }
    pub(super) fn zstd_level() -> i32 {
        1
    }
}

/// Properties whose values are secrets: never logged.
const SECRET_PROPERTIES: [&str; 3] = ["credential", "token", "s3.secret-access-key"];

/// Properties that authenticate with a bearer token, which a signed
/// request cannot carry (its `Authorization` header is the signature).
const TOKEN_PROPERTIES: [&str; 2] = ["token", "credential"];

impl IcebergConfig {
    /// A SQL catalog at `catalog_uri` with the warehouse at `warehouse`, and
    /// every other key at its default.
    pub fn new(catalog_uri: impl Into<String>, warehouse: impl Into<String>) -> Self {
        IcebergConfig {
            catalog: defaults::catalog(),
            catalog_uri: catalog_uri.into(),
            catalog_name: defaults::catalog_name(),
            warehouse: warehouse.into(),
            region: None,
            endpoint_url: None,
            namespace: defaults::namespace(),
            table: defaults::table(),
            commit_interval_ms: defaults::commit_interval_ms(),
            max_file_bytes: defaults::max_file_bytes(),
            row_group_rows: defaults::row_group_rows(),
            row_group_bytes: defaults::row_group_bytes(),
            zstd_level: defaults::zstd_level(),
            properties: BTreeMap::new(),
        }
    }

    /// Checks the values; touches nothing. Keys are relative to the section.
    ///
    /// # Errors
    /// The first problem found, naming its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.warehouse()?;
        match self.catalog {
            CatalogKind::Sql => {
                let uri = self.catalog_uri.as_str();
                if !(uri.starts_with("sqlite:")
                    || uri.starts_with("postgres://")
                    || uri.starts_with("postgresql://"))
                {
                    return Err(ConfigError::new(
                        "catalog_uri",
                        format!(
                            "`{uri}` is not a SQL catalog URL: use sqlite://<file> or postgres://<host>/<database>"
                        ),
                    ));
                }
            }
            CatalogKind::Rest => {
                if !(self.catalog_uri.starts_with("http://")
                    || self.catalog_uri.starts_with("https://"))
                {
                    return Err(ConfigError::new(
                        "catalog_uri",
                        format!(
                            "`{}` is not a REST catalog endpoint: use an http:// or https:// URL",
                            self.catalog_uri
                        ),
                    ));
                }
            }
        }
        for (key, value) in [
            ("catalog_name", &self.catalog_name),
            ("namespace", &self.namespace),
        ] {
            if value.trim().is_empty() {
                return Err(ConfigError::new(key, "must not be empty"));
            }
        }
        if self.namespace.split('.').any(str::is_empty) {
            return Err(ConfigError::new(
                "namespace",
                format!("`{}` has an empty level", self.namespace),
            ));
        }
        if !self.table.contains("{table}") {
            return Err(ConfigError::new(
                "table",
                "must contain `{table}`: each DynamoDB table needs its own Iceberg table",
            ));
        }
        if self.commit_interval_ms == 0 {
            return Err(ConfigError::new("commit_interval_ms", "must be at least 1"));
        }
        if self.row_group_rows == 0 {
            return Err(ConfigError::new("row_group_rows", "must be at least 1"));
        }
        for (key, value) in [
            ("max_file_bytes", self.max_file_bytes),
            ("row_group_bytes", self.row_group_bytes as u64),
        ] {
            if value < 1024 {
                return Err(ConfigError::new(key, "must be at least 1024"));
            }
        }
        if !(1..=22).contains(&self.zstd_level) {
            return Err(ConfigError::new(
                "zstd_level",
                format!("{} is not a zstd level (1 to 22)", self.zstd_level),
            ));
        }
        self.validate_signing()?;
        Ok(())
    }

    /// Checks the SigV4 properties: valid values, and signing only for a
    /// REST catalog and without a bearer token.
    fn validate_signing(&self) -> Result<(), ConfigError> {
        let signing = SigningConfig::from_properties(&self.properties)
            .map_err(|(key, reason)| ConfigError::new(format!("properties.{key}"), reason))?;
        if signing.is_none() {
            return Ok(());
        }
        if self.catalog != CatalogKind::Rest {
            return Err(ConfigError::new(
                format!("properties.{SIGV4_ENABLED}"),
                "applies only to catalog = \"rest\"",
            ));
        }
        if let Some(key) = TOKEN_PROPERTIES
            .into_iter()
            .find(|key| self.properties.contains_key(*key))
        {
            return Err(ConfigError::new(
                format!("properties.{key}"),
                format!(
                    "cannot be combined with {SIGV4_ENABLED} = \"true\": signed requests \
                     authenticate with AWS credentials"
                ),
            ));
        }
        Ok(())
    }

    /// Where table files go, as `warehouse`, `region` and `endpoint_url`
    /// say; pure.
    ///
    /// # Errors
    /// When one of them is not valid, or a table bucket is given to a SQL
    /// catalog.
    pub fn warehouse(&self) -> Result<Warehouse, ConfigError> {
        let options = StoreOptions {
            region: self.region.clone(),
            endpoint_url: self.endpoint_url.clone(),
        };
        if self.warehouse.starts_with("arn:") {
            return self.table_bucket(options);
        }
        Location::parse(&self.warehouse, options)
            .map(Warehouse::Path)
            .map_err(|(key, reason)| {
                let key = if key == "path" { "warehouse" } else { key };
                ConfigError::new(key, reason)
            })
    }

    /// `warehouse` as an S3 table bucket ARN, the bucket's region being the
    /// default `region`.
    fn table_bucket(&self, mut options: StoreOptions) -> Result<Warehouse, ConfigError> {
        let arn = &self.warehouse;
        let region = table_bucket_region(arn).ok_or_else(|| {
            ConfigError::new(
                "warehouse",
                format!(
                    "`{arn}` is not an S3 table bucket ARN \
                     (arn:aws:s3tables:<region>:<account>:bucket/<name>)"
                ),
            )
        })?;
        if self.catalog != CatalogKind::Rest {
            return Err(ConfigError::new(
                "warehouse",
                "an S3 table bucket is reached through its Iceberg REST endpoint: set \
                 catalog = \"rest\" and catalog_uri = \"https://s3tables.<region>.amazonaws.com/iceberg\"",
            ));
        }
        match &options.region {
            Some(given) if given != region => {
                return Err(ConfigError::new(
                    "region",
                    format!("`{given}` is not the table bucket's region `{region}`"),
                ));
            }
            Some(_) => {}
            None => options.region = Some(region.to_owned()),
        }
        let any = StoreUrl {
            scheme: Scheme::S3,
            bucket: "table-bucket".to_owned(),
            prefix: String::new(),
        };
        options
            .validate(&any)
            .map_err(|(key, reason)| ConfigError::new(key, reason))?;
        Ok(Warehouse::TableBucket {
            arn: arn.clone(),
            options,
        })
    }

    /// The Iceberg table name of a DynamoDB table.
    pub fn table_name(&self, table: &str) -> String {
        self.table.replace("{table}", table)
    }

    /// The namespace's levels.
    pub fn namespace_levels(&self) -> Vec<String> {
        self.namespace.split('.').map(str::to_owned).collect()
    }

    /// The catalog properties with secrets masked, for logs.
    pub fn describe_properties(&self) -> BTreeMap<&str, &str> {
        self.properties
            .iter()
            .map(|(k, v)| {
                let secret = SECRET_PROPERTIES.contains(&k.as_str())
                    || k.contains("secret")
                    || k.contains("password");
                (k.as_str(), if secret { "***" } else { v.as_str() })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> IcebergConfig {
        toml::from_str(text).unwrap()
    }

    const GOOD: &str = r#"
catalog = "sql"
catalog_uri = "sqlite://out/catalog.db"
catalog_name = "dynamo_cdc"
warehouse = "out/warehouse"
namespace = "cdc"
table = "{table}"
commit_interval_ms = 60000
"#;

    #[test]
    fn the_documented_keys_parse_with_defaults_for_the_rest() {
        let c = parse(GOOD);
        c.validate().unwrap();
        assert_eq!(c.catalog, CatalogKind::Sql);
        assert_eq!(c.table_name("orders"), "orders");
        assert_eq!(c.max_file_bytes, 256 << 20);
        let minimal = parse("catalog_uri = \"sqlite://c.db\"\nwarehouse = \"w\"");
        minimal.validate().unwrap();
        assert_eq!(minimal.catalog_name, "dynamo_cdc");
        assert_eq!(minimal.namespace, "cdc");
        assert_eq!(minimal.commit_interval_ms, 60_000);
        assert_eq!(minimal.row_group_bytes, 8 << 20);
    }

    #[test]
    fn errors_name_the_key() {
        let bad = |from: &str, to: &str| parse(&GOOD.replace(from, to)).validate().unwrap_err();
        assert_eq!(bad("sqlite://out", "mysql://out").key, "catalog_uri");
        assert_eq!(bad("\"{table}\"", "\"all\"").key, "table");
        assert_eq!(bad("= 60000", "= 0").key, "commit_interval_ms");
        assert_eq!(bad("\"cdc\"", "\"a..b\"").key, "namespace");
        assert_eq!(bad("out/warehouse", "s3://").key, "warehouse");
        let tiny = parse(&format!("{GOOD}row_group_bytes = 100\n"));
        assert_eq!(tiny.validate().unwrap_err().key, "row_group_bytes");
        let rest = parse(&GOOD.replace("\"sql\"", "\"rest\""));
        assert_eq!(rest.validate().unwrap_err().key, "catalog_uri");
        let e =
            toml::from_str::<IcebergConfig>(&GOOD.replace("namespace", "namespaec")).unwrap_err();
        assert!(e.to_string().contains("namespaec"), "{e}");
    }

    #[test]
    fn rest_properties_pass_through_and_secrets_are_masked() {
        let c = parse(
            r#"
catalog = "rest"
catalog_uri = "https://catalog.example/api/catalog"
warehouse = "analytics"
[properties]
credential = "id:secret"
scope = "PRINCIPAL_ROLE:ALL"
"#,
        );
        c.validate().unwrap();
        let shown = c.describe_properties();
        assert_eq!(shown["credential"], "***");
        assert_eq!(shown["scope"], "PRINCIPAL_ROLE:ALL");
    }

    /// The Glue example of docs/iceberg.md.
    const GLUE: &str = r#"
catalog = "rest"
catalog_uri = "https://glue.us-east-1.amazonaws.com/iceberg"
warehouse = "s3://analytics-lake/cdc"
region = "us-east-1"
[properties]
warehouse = "123456789012"
"rest.sigv4-enabled" = "true"
"rest.signing-name" = "glue"
"rest.signing-region" = "us-east-1"
"#;

    #[test]
    fn sigv4_properties_are_accepted_for_glue_and_s3_tables() {
        parse(GLUE).validate().unwrap();
        let s3_tables = parse(
            r#"
catalog = "rest"
catalog_uri = "https://s3tables.eu-west-1.amazonaws.com/iceberg"
warehouse = "s3://lake"
[properties]
warehouse = "arn:aws:s3tables:eu-west-1:123456789012:bucket/lake"
"rest.sigv4-enabled" = "true"
"rest.signing-name" = "s3tables"
"#,
        );
        s3_tables.validate().unwrap();
        let off = parse(
            r#"
catalog = "rest"
catalog_uri = "https://catalog.example/api/catalog"
warehouse = "analytics"
[properties]
"rest.sigv4-enabled" = "false"
token = "t"
"#,
        );
        off.validate().unwrap();
    }

    /// An S3 Tables configuration like the one in docs/iceberg.md (another
    /// region, which the ARN makes the default).
    const S3_TABLES: &str = r#"
catalog = "rest"
catalog_uri = "https://s3tables.eu-west-1.amazonaws.com/iceberg"
warehouse = "arn:aws:s3tables:eu-west-1:123456789012:bucket/analytics"
[properties]
"rest.sigv4-enabled" = "true"
"rest.signing-name" = "s3tables"
"#;

    #[test]
    fn an_s3_table_bucket_is_a_warehouse_whose_region_it_names() {
        let c = parse(S3_TABLES);
        c.validate().unwrap();
        let Warehouse::TableBucket { arn, options } = c.warehouse().unwrap() else {
            panic!("not a table bucket");
        };
        assert_eq!(
            arn,
            "arn:aws:s3tables:eu-west-1:123456789012:bucket/analytics"
        );
        assert_eq!(options.region.as_deref(), Some("eu-west-1"));
        // The same region may be given; an endpoint too (tests, proxies).
        let same = parse(&S3_TABLES.replace(
            "[properties]",
            "region = \"eu-west-1\"\nendpoint_url = \"http://127.0.0.1:5000\"\n[properties]",
        ));
        same.validate().unwrap();
        // A bucket prefix stays a path.
        assert!(matches!(
            parse(GLUE).warehouse().unwrap(),
            Warehouse::Path(Location::Remote { .. })
        ));
    }

    #[test]
    fn a_bad_table_bucket_names_its_key() {
        let bad =
            |from: &str, to: &str| parse(&S3_TABLES.replace(from, to)).validate().unwrap_err();
        for arn in [
            "arn:aws:s3:::analytics",
            "arn:aws:s3tables:eu-west-1:1234:bucket/analytics",
            "arn:aws:s3tables::123456789012:bucket/analytics",
            "arn:aws:s3tables:eu-west-1:123456789012:bucket/",
            "arn:aws:s3tables:eu-west-1:123456789012:table/analytics",
        ] {
            let e = bad(
                "arn:aws:s3tables:eu-west-1:123456789012:bucket/analytics",
                arn,
            );
            assert_eq!(e.key, "warehouse", "{arn}");
            assert!(
                e.reason.contains("not an S3 table bucket ARN"),
                "{}",
                e.reason
            );
        }
        let e = bad("[properties]", "region = \"us-east-1\"\n[properties]");
        assert_eq!(e.key, "region");
        assert!(e.reason.contains("`eu-west-1`"), "{}", e.reason);
        let e = bad("[properties]", "endpoint_url = \"ftp://x\"\n[properties]");
        assert_eq!(e.key, "endpoint_url");
        // A SQL catalog has no way to reach a table bucket.
        let sql = S3_TABLES
            .replace("\"rest\"", "\"sql\"")
            .replace(
                "https://s3tables.eu-west-1.amazonaws.com/iceberg",
                "sqlite://c.db",
            )
            .replace("\"rest.sigv4-enabled\" = \"true\"\n", "")
            .replace("\"rest.signing-name\" = \"s3tables\"\n", "");
        let e = parse(&sql).validate().unwrap_err();
        assert_eq!(e.key, "warehouse");
        assert!(e.reason.contains("catalog = \"rest\""), "{}", e.reason);
    }

    #[test]
    fn bad_sigv4_properties_name_their_key() {
        let bad = |from: &str, to: &str| parse(&GLUE.replace(from, to)).validate().unwrap_err();
        let e = bad("\"true\"", "\"yes\"");
        assert_eq!(e.key, "properties.rest.sigv4-enabled");
        assert!(e.reason.contains("`yes`"), "{}", e.reason);
        let e = bad("region\" = \"us-east-1\"", "region\" = \"US East\"");
        assert_eq!(e.key, "properties.rest.signing-region");
        assert_eq!(bad("\"glue\"", "\"\"").key, "properties.rest.signing-name");
        // A name or region without signing would do nothing.
        let e = bad("\"true\"", "\"false\"");
        assert_eq!(e.key, "properties.rest.signing-name");
        // Signing goes with REST catalogs, and replaces bearer tokens.
        let sql = GLUE.replace("\"rest\"", "\"sql\"").replace(
            "https://glue.us-east-1.amazonaws.com/iceberg",
            "sqlite://c.db",
        );
        let e = parse(&sql).validate().unwrap_err();
        assert_eq!(e.key, "properties.rest.sigv4-enabled");
        let e = bad("[properties]", "[properties]\ntoken = \"t\"");
        assert_eq!(e.key, "properties.token");
    }
}
