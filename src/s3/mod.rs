//! S3-compatible object stores (issue #13): `s3://BUCKET[/KEY]` locations,
//! a blocking client over `aws-sdk-s3` (its tokio runtime stays in here: the
//! rest of casevault is synchronous), and [`ObjectReader`], a `Read + Seek`
//! view of one object version made of ranged GETs.
//!
//! Credentials, region and endpoint come only the AWS way: the standard
//! environment variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`, `AWS_REGION`, `AWS_ENDPOINT_URL`), the shared
//! config and credentials files, and `AWS_PROFILE`. With an endpoint set,
//! requests use path-style addressing (`http://HOST/BUCKET/KEY`), which every
//! S3-compatible server understands. Error messages name the operation,
//! bucket, key and S3 error code, never a credential ([`Error::S3`]).

use std::io;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client as SdkClient;

use crate::{Error, Result};

pub mod object;
pub mod upload;

pub use object::ObjectReader;

/// The URL scheme of an S3 location.
pub const SCHEME: &str = "s3://";

/// A bucket and a key (or key prefix, possibly empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub bucket: String,
    pub key: String,
}

impl Location {
    /// Parse `s3://BUCKET[/KEY]`; `None` when `s` is not an S3 URL at all,
    /// a usage error when it is one without a valid bucket name.
    pub fn parse(s: &str) -> Option<Result<Location>> {
        let rest = s.strip_prefix(SCHEME)?;
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        // S3 bucket names: 3-63 of [a-z0-9.-] (Ceph and MinIO accept the
        // same); anything else is a typo, caught before any request.
        let ok = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-');
        Some(if ok {
            Ok(Location {
                bucket: bucket.to_string(),
                key: key.to_string(),
            })
        } else {
            Err(Error::Usage(format!(
                "{s}: not a valid s3://BUCKET/KEY (a bucket name is 3 to 63 lowercase letters, digits, dots and hyphens)"
            )))
        })
    }

    /// The location of a path given on the command line, if it is an S3 URL.
    pub fn of_path(p: &Path) -> Option<Result<Location>> {
        Location::parse(p.to_str()?)
    }

    /// The same bucket, another key.
    pub fn with_key(&self, key: impl Into<String>) -> Location {
        Location {
            bucket: self.bucket.clone(),
            key: key.into(),
        }
    }

    /// `KEY` + `suffix` (a sidecar, a signature).
    pub fn suffixed(&self, suffix: &str) -> Location {
        self.with_key(format!("{}{suffix}", self.key))
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{SCHEME}{}/{}", self.bucket, self.key)
    }
}

/// Whether a command-line path names an S3 object or store.
pub fn is_s3(p: &Path) -> bool {
    p.to_str().is_some_and(|s| s.starts_with(SCHEME))
}

/// What HEAD says about an object.
#[derive(Debug, Clone)]
pub struct Head {
    pub size: u64,
    pub version_id: Option<String>,
    /// The ETag; a multipart object's ends in `-N`, N its parts.
    pub etag: Option<String>,
}

/// Object Lock retention of one object version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    /// `COMPLIANCE` or `GOVERNANCE`.
    pub mode: String,
    /// Seconds since the Unix epoch.
    pub until: i64,
}

/// A bucket's Object Lock configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockConfig {
    pub enabled: bool,
    /// The default retention (mode, seconds), if any.
    pub default: Option<(String, i64)>,
}

/// One object of a listing.
#[derive(Debug, Clone)]
pub struct Listed {
    pub key: String,
    pub size: u64,
}

/// A multipart upload in progress.
#[derive(Debug, Clone)]
pub struct Upload {
    pub key: String,
    pub upload_id: String,
}

/// The HTTP(S) client: hyper with rustls on ring (no cmake or aws-lc-sys
/// at build time; see docs/PERFORMANCE.md).
fn http_client() -> aws_sdk_s3::config::SharedHttpClient {
    use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

/// The blocking client: one per process, made on first use.
pub struct Client {
    rt: tokio::runtime::Runtime,
    sdk: SdkClient,
}

static CLIENT: OnceLock<std::result::Result<Client, String>> = OnceLock::new();

/// The process's client, configured from the environment the AWS way.
pub fn client() -> Result<&'static Client> {
    CLIENT
        .get_or_init(Client::from_env)
        .as_ref()
        .map_err(|e| Error::Refused(e.clone()))
}

impl Client {
    /// A client with fixed credentials and endpoint, for tests and tools
    /// that manage a test server (never used by the command line, which
    /// takes credentials only the AWS way).
    pub fn with_static(endpoint: &str, access_key: &str, secret_key: &str) -> Result<Client> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Refused(format!("cannot start the S3 client's runtime: {e}")))?;
        let conf = aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .http_client(http_client())
            .endpoint_url(endpoint)
            .force_path_style(true)
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                access_key, secret_key, None, None, "static",
            ))
            .request_checksum_calculation(
                aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
            )
            .response_checksum_validation(
                aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired,
            )
            .build();
        Ok(Client {
            rt,
            sdk: SdkClient::from_conf(conf),
        })
    }

    /// Create a bucket, with Object Lock (and so versioning) when `lock`.
    pub fn create_bucket(&self, bucket: &str, lock: bool) -> Result<()> {
        self.run(
            self.sdk
                .create_bucket()
                .bucket(bucket)
                .object_lock_enabled_for_bucket(lock)
                .send(),
        )
        .map(|_| ())
        .map_err(|e| {
            s3_error(
                "CreateBucket",
                &Location {
                    bucket: bucket.into(),
                    key: String::new(),
                },
                e,
            )
        })
    }

    /// Set a bucket's default retention (Object Lock must be on).
    pub fn set_default_retention(&self, bucket: &str, mode: &str, days: i32) -> Result<()> {
        use aws_sdk_s3::types::{
            DefaultRetention, ObjectLockConfiguration, ObjectLockEnabled, ObjectLockRetentionMode,
            ObjectLockRule,
        };
        let conf = ObjectLockConfiguration::builder()
            .object_lock_enabled(ObjectLockEnabled::Enabled)
            .rule(
                ObjectLockRule::builder()
                    .default_retention(
                        DefaultRetention::builder()
                            .mode(ObjectLockRetentionMode::from(mode))
                            .days(days)
                            .build(),
                    )
                    .build(),
            )
            .build();
        self.run(
            self.sdk
                .put_object_lock_configuration()
                .bucket(bucket)
                .object_lock_configuration(conf)
                .send(),
        )
        .map(|_| ())
        .map_err(|e| {
            s3_error(
                "PutObjectLockConfiguration",
                &Location {
                    bucket: bucket.into(),
                    key: String::new(),
                },
                e,
            )
        })
    }

    /// The version ids of `loc`'s key, newest first.
    pub fn versions(&self, loc: &Location) -> Result<Vec<String>> {
        let o = self
            .run(
                self.sdk
                    .list_object_versions()
                    .bucket(&loc.bucket)
                    .prefix(&loc.key)
                    .send(),
            )
            .map_err(|e| s3_error("ListObjectVersions", loc, e))?;
        Ok(o.versions()
            .iter()
            .filter(|v| v.key() == Some(loc.key.as_str()))
            .filter_map(|v| v.version_id().map(str::to_string))
            .collect())
    }

    fn from_env() -> std::result::Result<Client, String> {
        use aws_config::timeout::TimeoutConfig;
        use aws_config::{BehaviorVersion, Region};
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the S3 client's runtime: {e}"))?;
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(120))
            .build();
        let shared = rt.block_on(
            aws_config::defaults(BehaviorVersion::latest())
                .http_client(http_client())
                .timeout_config(timeouts)
                .load(),
        );
        let mut b = aws_sdk_s3::config::Builder::from(&shared)
            // Checksums only where S3 requires them: S3-compatible servers
            // (Ceph 16.2 among them) reject the newer default trailers.
            .request_checksum_calculation(
                aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
            )
            .response_checksum_validation(
                aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired,
            );
        if shared.endpoint_url().is_some() {
            b = b.force_path_style(true);
        }
        if shared.region().is_none() {
            // S3-compatible servers ignore it, and AWS redirects.
            b = b.region(Region::new("us-east-1"));
        }
        Ok(Client {
            rt,
            sdk: SdkClient::from_conf(b.build()),
        })
    }

    /// Run one request to completion on the calling thread. The runtime
    /// is current_thread, and the upload pool calls this from
    /// `upload::IN_FLIGHT` threads at once: tokio allows `block_on` on a
    /// current_thread runtime from several threads (one of them drives
    /// the I/O driver for all; each polls its own request, so signing and
    /// hashing run in parallel). Measured with 4 and 8 uploader threads
    /// against radosgw (docs/PERFORMANCE.md): uploads keep up with
    /// sealing, so a multi_thread runtime would only add threads.
    fn run<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// HEAD of the current version (or of `version`): `None` when there
    /// is no such object.
    pub fn head(&self, loc: &Location, version: Option<&str>) -> Result<Option<Head>> {
        let r = self.run(
            self.sdk
                .head_object()
                .bucket(&loc.bucket)
                .key(&loc.key)
                .set_version_id(version.map(str::to_string))
                .send(),
        );
        match r {
            Ok(o) => Ok(Some(Head {
                size: o.content_length().unwrap_or(0).max(0) as u64,
                version_id: o.version_id().map(str::to_string),
                etag: o.e_tag().map(str::to_string),
            })),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) if matches!(status_of(&e), Some(400..=499)) => {
                // A HEAD answer has no body, so no S3 error code: ask the
                // same with a one-byte GET, whose answer names it
                // (SignatureDoesNotMatch, InvalidAccessKeyId, ...).
                let r = self.run(
                    self.sdk
                        .get_object()
                        .bucket(&loc.bucket)
                        .key(&loc.key)
                        .set_version_id(version.map(str::to_string))
                        .range("bytes=0-0")
                        .send(),
                );
                match r {
                    Err(g) if !is_not_found(&g) => Err(s3_error("GetObject", loc, g)),
                    _ => Err(s3_error("HeadObject", loc, e)),
                }
            }
            Err(e) => Err(s3_error("HeadObject", loc, e)),
        }
    }

    /// GET the bytes `start..` (to `end`, exclusive, if given) of a version.
    pub fn get_range(
        &self,
        loc: &Location,
        version: Option<&str>,
        start: u64,
        end: Option<u64>,
    ) -> Result<ByteStream> {
        let range = match end {
            Some(e) => format!("bytes={start}-{}", e.saturating_sub(1)),
            None => format!("bytes={start}-"),
        };
        let r = self.run(
            self.sdk
                .get_object()
                .bucket(&loc.bucket)
                .key(&loc.key)
                .set_version_id(version.map(str::to_string))
                .range(range)
                .send(),
        );
        r.map(|o| o.body).map_err(|e| s3_error("GetObject", loc, e))
    }

    /// Read a small object (a sidecar, a signature) whole: `None` if it
    /// does not exist, a refusal if it is larger than `cap`.
    pub fn get_small(&self, loc: &Location, cap: u64) -> Result<Option<Vec<u8>>> {
        let r = self.run(
            self.sdk
                .get_object()
                .bucket(&loc.bucket)
                .key(&loc.key)
                .send(),
        );
        let o = match r {
            Ok(o) => o,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(s3_error("GetObject", loc, e)),
        };
        if o.content_length().unwrap_or(0) as u64 > cap {
            return Err(Error::Refused(format!(
                "{loc}: larger than {cap} bytes; not a sidecar or signature casevault wrote"
            )));
        }
        let mut body = o.body;
        let mut out = Vec::new();
        loop {
            let chunk = self.run(body.try_next()).map_err(|e| {
                Error::io(
                    "cannot read",
                    Path::new(&loc.to_string()),
                    io::Error::other(e.to_string()),
                )
            })?;
            match chunk {
                None => break,
                Some(b) => {
                    out.extend_from_slice(&b);
                    if out.len() as u64 > cap {
                        return Err(Error::Refused(format!(
                            "{loc}: larger than {cap} bytes; not a sidecar or signature casevault wrote"
                        )));
                    }
                }
            }
        }
        Ok(Some(out))
    }

    /// PUT a small object whole, with per-object retention when given.
    /// Returns its version id.
    pub fn put_small(
        &self,
        loc: &Location,
        bytes: Vec<u8>,
        retention: Option<&Retention>,
    ) -> Result<Option<String>> {
        let mut req = self
            .sdk
            .put_object()
            .bucket(&loc.bucket)
            .key(&loc.key)
            .body(ByteStream::from(bytes));
        if let Some(r) = retention {
            req = req
                .object_lock_mode(r.mode.as_str().into())
                .object_lock_retain_until_date(aws_smithy_types::DateTime::from_secs(r.until));
        }
        let o = self
            .run(req.send())
            .map_err(|e| s3_error("PutObject", loc, e))?;
        Ok(o.version_id().map(str::to_string))
    }

    /// Start a multipart upload; returns its id.
    pub fn create_multipart(&self, loc: &Location) -> Result<String> {
        let o = self
            .run(
                self.sdk
                    .create_multipart_upload()
                    .bucket(&loc.bucket)
                    .key(&loc.key)
                    .send(),
            )
            .map_err(|e| s3_error("CreateMultipartUpload", loc, e))?;
        o.upload_id()
            .map(str::to_string)
            .ok_or_else(|| s3_plain("CreateMultipartUpload", loc, "no upload id in the answer"))
    }

    /// Upload part `n` (from 1); returns its ETag. Several threads may
    /// upload parts at once (`upload::IN_FLIGHT`): they share the runtime
    /// (see [`Client::run`]).
    pub fn upload_part(
        &self,
        loc: &Location,
        id: &str,
        n: i32,
        part: upload::PartBody,
    ) -> Result<String> {
        // A temporary file stays open (`_keep`) until the request is done:
        // the body reads it through its descriptor.
        let (body, _keep) = match part {
            upload::PartBody::Mem(bytes) => (ByteStream::from(bytes), None),
            upload::PartBody::File { file, len } => (self.file_body(loc, &file, len)?, Some(file)),
        };
        let o = self
            .run(
                self.sdk
                    .upload_part()
                    .bucket(&loc.bucket)
                    .key(&loc.key)
                    .upload_id(id)
                    .part_number(n)
                    .body(body)
                    .send(),
            )
            .map_err(|e| s3_error("UploadPart", loc, e))?;
        o.e_tag()
            .map(str::to_string)
            .ok_or_else(|| s3_plain("UploadPart", loc, "no ETag in the answer"))
    }

    /// The body of a part held in an unnamed temporary file: read through
    /// `/proc/self/fd/N` where that exists, so that the SDK can reopen it
    /// to retry; else from the open file (no retry). The caller keeps
    /// `file` open until the request is done.
    fn file_body(&self, loc: &Location, file: &std::fs::File, len: u64) -> Result<ByteStream> {
        use aws_smithy_types::byte_stream::Length;
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let proc_path = format!("/proc/self/fd/{}", file.as_raw_fd());
            if Path::new(&proc_path).exists() {
                let r = self.run(
                    ByteStream::read_from()
                        .path(&proc_path)
                        .length(Length::Exact(len))
                        .build(),
                );
                if let Ok(body) = r {
                    return Ok(body);
                }
            }
        }
        let err = |e: io::Error| {
            Error::io(
                "cannot read a part's temporary file for",
                Path::new(&loc.to_string()),
                e,
            )
        };
        let mut f = file.try_clone().map_err(err)?;
        io::Seek::seek(&mut f, io::SeekFrom::Start(0)).map_err(err)?;
        let tfile = tokio::fs::File::from_std(f);
        self.run(
            ByteStream::read_from()
                .file(tfile)
                .length(Length::Exact(len))
                .build(),
        )
        .map_err(|e| err(io::Error::other(e.to_string())))
    }

    /// Complete a multipart upload from its parts' ETags (in order); the
    /// object becomes visible only now. Returns its version id.
    pub fn complete_multipart(
        &self,
        loc: &Location,
        id: &str,
        etags: &[String],
    ) -> Result<Option<String>> {
        use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
        let parts = etags
            .iter()
            .enumerate()
            .map(|(i, e)| {
                CompletedPart::builder()
                    .part_number(i as i32 + 1)
                    .e_tag(e)
                    .build()
            })
            .collect();
        let o = self
            .run(
                self.sdk
                    .complete_multipart_upload()
                    .bucket(&loc.bucket)
                    .key(&loc.key)
                    .upload_id(id)
                    .multipart_upload(
                        CompletedMultipartUpload::builder()
                            .set_parts(Some(parts))
                            .build(),
                    )
                    .send(),
            )
            .map_err(|e| s3_error("CompleteMultipartUpload", loc, e))?;
        Ok(o.version_id().map(str::to_string))
    }

    /// Abort a multipart upload (its parts are discarded).
    pub fn abort_multipart(&self, loc: &Location, id: &str) -> Result<()> {
        match self.run(
            self.sdk
                .abort_multipart_upload()
                .bucket(&loc.bucket)
                .key(&loc.key)
                .upload_id(id)
                .send(),
        ) {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(s3_error("AbortMultipartUpload", loc, e)),
        }
    }

    /// Multipart uploads in progress under `prefix`.
    pub fn list_uploads(&self, loc: &Location) -> Result<Vec<Upload>> {
        let mut out = Vec::new();
        let (mut key_marker, mut id_marker) = (None::<String>, None::<String>);
        loop {
            let o = self
                .run(
                    self.sdk
                        .list_multipart_uploads()
                        .bucket(&loc.bucket)
                        .prefix(&loc.key)
                        .set_key_marker(key_marker.clone())
                        .set_upload_id_marker(id_marker.clone())
                        .send(),
                )
                .map_err(|e| s3_error("ListMultipartUploads", loc, e))?;
            for u in o.uploads() {
                if let (Some(k), Some(id)) = (u.key(), u.upload_id()) {
                    out.push(Upload {
                        key: k.to_string(),
                        upload_id: id.to_string(),
                    });
                }
            }
            if o.is_truncated() != Some(true) {
                return Ok(out);
            }
            key_marker = o.next_key_marker().map(str::to_string);
            id_marker = o.next_upload_id_marker().map(str::to_string);
            if key_marker.is_none() && id_marker.is_none() {
                return Ok(out);
            }
        }
    }

    /// One page of objects under `prefix` (ListObjectsV2), in key order,
    /// and the token for the next page. Pages keep memory bounded
    /// whatever the size of the store.
    pub fn list_page(
        &self,
        loc: &Location,
        token: Option<String>,
    ) -> Result<(Vec<Listed>, Option<String>)> {
        let o = self
            .run(
                self.sdk
                    .list_objects_v2()
                    .bucket(&loc.bucket)
                    .prefix(&loc.key)
                    .set_continuation_token(token)
                    .send(),
            )
            .map_err(|e| s3_error("ListObjectsV2", loc, e))?;
        let page = o
            .contents()
            .iter()
            .filter_map(|c| {
                Some(Listed {
                    key: c.key()?.to_string(),
                    size: c.size().unwrap_or(0).max(0) as u64,
                })
            })
            .collect();
        let next = if o.is_truncated() == Some(true) {
            o.next_continuation_token().map(str::to_string)
        } else {
            None
        };
        Ok((page, next))
    }

    /// Set per-object retention on a version (after a multipart upload:
    /// radosgw 16.2 ignores lock headers on CreateMultipartUpload).
    pub fn put_retention(
        &self,
        loc: &Location,
        version: Option<&str>,
        r: &Retention,
    ) -> Result<()> {
        use aws_sdk_s3::types::{ObjectLockRetention, ObjectLockRetentionMode};
        let ret = ObjectLockRetention::builder()
            .mode(ObjectLockRetentionMode::from(r.mode.as_str()))
            .retain_until_date(aws_smithy_types::DateTime::from_secs(r.until))
            .build();
        self.run(
            self.sdk
                .put_object_retention()
                .bucket(&loc.bucket)
                .key(&loc.key)
                .set_version_id(version.map(str::to_string))
                .retention(ret)
                .send(),
        )
        .map(|_| ())
        .map_err(|e| s3_error("PutObjectRetention", loc, e))
    }

    /// The retention of a version, `None` if it has none.
    pub fn get_retention(
        &self,
        loc: &Location,
        version: Option<&str>,
    ) -> Result<Option<Retention>> {
        let r = self.run(
            self.sdk
                .get_object_retention()
                .bucket(&loc.bucket)
                .key(&loc.key)
                .set_version_id(version.map(str::to_string))
                .send(),
        );
        let o = match r {
            Ok(o) => o,
            Err(e) if no_lock_config(&e) => return Ok(None),
            Err(e) => return Err(s3_error("GetObjectRetention", loc, e)),
        };
        Ok(o.retention().and_then(|r| {
            Some(Retention {
                mode: r.mode()?.as_str().to_string(),
                until: r.retain_until_date()?.secs(),
            })
        }))
    }

    /// The bucket's Object Lock configuration.
    pub fn lock_config(&self, loc: &Location) -> Result<LockConfig> {
        let r = self.run(
            self.sdk
                .get_object_lock_configuration()
                .bucket(&loc.bucket)
                .send(),
        );
        let o = match r {
            Ok(o) => o,
            Err(e) if no_lock_config(&e) => {
                return Ok(LockConfig {
                    enabled: false,
                    default: None,
                })
            }
            Err(e) => return Err(s3_error("GetObjectLockConfiguration", &loc.with_key(""), e)),
        };
        let Some(c) = o.object_lock_configuration() else {
            return Ok(LockConfig {
                enabled: false,
                default: None,
            });
        };
        let enabled = c.object_lock_enabled().map(|e| e.as_str()) == Some("Enabled");
        let default = c.rule().and_then(|r| r.default_retention()).and_then(|d| {
            let secs = match (d.days(), d.years()) {
                (Some(days), _) if days > 0 => i64::from(days) * 86_400,
                (_, Some(y)) if y > 0 => i64::from(y) * 365 * 86_400,
                _ => return None,
            };
            Some((d.mode()?.as_str().to_string(), secs))
        });
        Ok(LockConfig { enabled, default })
    }

    /// Delete one version (or, without one, add a delete marker).
    pub fn delete(&self, loc: &Location, version: Option<&str>) -> Result<()> {
        self.run(
            self.sdk
                .delete_object()
                .bucket(&loc.bucket)
                .key(&loc.key)
                .set_version_id(version.map(str::to_string))
                .send(),
        )
        .map(|_| ())
        .map_err(|e| s3_error("DeleteObject", loc, e))
    }

    pub(crate) fn next_chunk(&self, body: &mut ByteStream) -> io::Result<Option<bytes::Bytes>> {
        self.run(body.try_next())
            .map_err(|e| io::Error::other(e.to_string()))
    }
}

fn is_not_found<E: ProvideErrorMetadata>(e: &SdkError<E, HttpResponse>) -> bool {
    match e {
        SdkError::ServiceError(s) => {
            matches!(
                s.err().code(),
                Some("NoSuchKey" | "NotFound" | "NoSuchUpload")
            ) || status_of(e) == Some(404) && s.err().code() != Some("NoSuchBucket")
        }
        _ => false,
    }
}

fn no_lock_config<E: ProvideErrorMetadata>(e: &SdkError<E, HttpResponse>) -> bool {
    match e {
        SdkError::ServiceError(s) => matches!(
            s.err().code(),
            Some(
                "ObjectLockConfigurationNotFoundError"
                    | "NoSuchObjectLockConfiguration"
                    | "InvalidRequest"
            )
        ),
        _ => false,
    }
}

fn status_of<E>(e: &SdkError<E, HttpResponse>) -> Option<u16> {
    e.raw_response().map(|r| r.status().as_u16())
}

/// An S3 failure as casevault reports it: operation, bucket, key, the S3
/// error code and the server's message. Never the request (its signature)
/// and never a credential: the SDK's error types are not formatted with
/// `Debug`, only their code and message.
pub(crate) fn s3_error<E: ProvideErrorMetadata + std::error::Error + 'static>(
    op: &'static str,
    loc: &Location,
    e: SdkError<E, HttpResponse>,
) -> Error {
    if let Some(sig) = crate::signal::pending() {
        return Error::Interrupted(sig);
    }
    let (code, detail) = match &e {
        SdkError::ServiceError(s) => {
            let code = s.err().code().map(str::to_string).unwrap_or_else(|| {
                status_of(&e)
                    .map(|st| format!("HTTP {st}"))
                    .unwrap_or_else(|| "unknown".into())
            });
            (code, s.err().message().unwrap_or("").to_string())
        }
        SdkError::DispatchFailure(d) => {
            let code = if d.is_timeout() {
                "Timeout"
            } else if d.is_io() {
                "ConnectionFailed"
            } else {
                "DispatchFailure"
            };
            (code.to_string(), dispatch_detail(&e))
        }
        SdkError::TimeoutError(_) => ("Timeout".into(), "no answer in time".into()),
        SdkError::ResponseError(_) => ("BadResponse".into(), dispatch_detail(&e)),
        SdkError::ConstructionFailure(_) => ("RequestNotSent".into(), dispatch_detail(&e)),
        _ => ("unknown".into(), dispatch_detail(&e)),
    };
    Error::S3 {
        op,
        bucket: loc.bucket.clone(),
        key: loc.key.clone(),
        code,
        detail,
    }
}

fn s3_plain(op: &'static str, loc: &Location, detail: &str) -> Error {
    Error::S3 {
        op,
        bucket: loc.bucket.clone(),
        key: loc.key.clone(),
        code: "BadResponse".into(),
        detail: detail.into(),
    }
}

/// The innermost cause of a failure that did not come from the server
/// (connection refused, no credentials). Credential providers never put a
/// secret in their messages; they name which source they tried.
fn dispatch_detail(e: &dyn std::error::Error) -> String {
    let mut cur: &dyn std::error::Error = e;
    let mut last = cur.to_string();
    while let Some(next) = cur.source() {
        last = next.to_string();
        cur = next;
    }
    last
}
