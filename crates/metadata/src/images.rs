//! Images: `v1/<ns>/images/<name>/{createdat, updatedat, labels/, annotations/, target/}`.

use std::time::SystemTime;

use stowage_bolt::{Bucket, BucketMut};
use stowage_core_types::filters::Filter;
use stowage_core_types::image::{DeleteOptions, Store};
use stowage_core_types::{fieldpath, Descriptor, Digest, Error, Result};

/// The image record, from core-types (re-exported here, where it used to live).
pub use stowage_core_types::image::Image;

use crate::db::Db;
use crate::encoding::{encode_varint, read_size};
use crate::namespaces::check;
use crate::schema::*;

/// The images of one namespace.
#[derive(Debug, Clone)]
pub struct Images {
    db: Db,
    ns: String,
}

impl Db {
    /// The image store of namespace `ns`.
    pub fn images(&self, ns: &str) -> Result<Images> {
        check(ns)?;
        Ok(Images {
            db: self.clone(),
            ns: ns.to_string(),
        })
    }
}

fn validate(image: &Image) -> Result<()> {
    if image.name.is_empty() {
        return Err(Error::invalid_argument("image name must not be empty"));
    }
    validate_labels("image.Labels", &image.labels)?;
    if image.target.size == 0 || image.target.size > i64::MAX as u64 {
        return Err(Error::invalid_argument(format!(
            "Target.Size must be greater than zero (got {})",
            image.target.size
        )));
    }
    if image.target.media_type.is_empty() {
        return Err(Error::invalid_argument("Target.MediaType must be set"));
    }
    Ok(())
}

pub(crate) fn read_image(name: &str, b: Bucket<'_>) -> Result<Image> {
    let (created_at, updated_at) = read_timestamps(b)?;
    let labels = read_labels(b)?;
    let annotations = read_map(b, ANNOTATIONS)?;
    let t = b
        .bucket(TARGET)
        .b()?
        .ok_or_else(|| Error::data_loss(format!("image {name:?}: unable to read target bucket")))?;
    let digest_raw = t.get(DIGEST).b()?.unwrap_or_default();
    let digest = Digest::parse(&lossy(digest_raw))
        .map_err(|e| e.context(format!("image {name:?} target digest")))?;
    let media_type = lossy(t.get(MEDIATYPE).b()?.unwrap_or_default());
    let size = t.get(SIZE).b()?.map(read_size).unwrap_or(0).max(0) as u64;
    let mut target = Descriptor::new(media_type, digest, size);
    target.annotations = annotations;
    Ok(Image {
        name: name.to_string(),
        labels,
        target,
        created_at,
        updated_at,
    })
}

/// Writes `image`, first dropping its empty label and annotation values: they are not
/// stored, and the image the caller gets back must be what a later get returns (containerd
/// drops them from the caller's maps as it writes).
fn write_image(b: &mut BucketMut<'_>, image: &mut Image) -> Result<()> {
    image.labels.retain(|_, v| !v.is_empty());
    image.target.annotations.retain(|_, v| !v.is_empty());
    write_timestamps(b, image.created_at, image.updated_at)?;
    write_labels(b, &image.labels)?;
    write_map(b, ANNOTATIONS, &image.target.annotations)?;
    let mut t = b.create_bucket_if_not_exists(TARGET).b()?;
    t.put(DIGEST, image.target.digest.as_str().as_bytes()).b()?;
    t.put(MEDIATYPE, image.target.media_type.as_bytes()).b()?;
    t.put(SIZE, &encode_varint(image.target.size as i64)).b()
}

fn not_found(name: &str) -> Error {
    Error::not_found(format!("image {name:?}"))
}

impl Images {
    /// The image `name`; `NotFound` when absent.
    pub fn get(&self, name: &str) -> Result<Image> {
        let tx = self.db.read()?;
        let b = get_path(
            tx.root(),
            &[SCHEMA, self.ns.as_bytes(), IMAGES, name.as_bytes()],
        )?
        .ok_or_else(|| not_found(name))?;
        read_image(name, b)
    }

    /// Images matching any of `filters` (fields `name`, `target.digest`, `target.mediatype`,
    /// `labels.<k>`, `annotations.<k>`), in name order.
    pub fn list(&self, filters: &[String]) -> Result<Vec<Image>> {
        let filter = Filter::parse_all(filters)?;
        let tx = self.db.read()?;
        let Some(ib) = get_path(tx.root(), &[SCHEMA, self.ns.as_bytes(), IMAGES])? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for name in bucket_names(ib)? {
            let Some(b) = ib.bucket(&name).b()? else {
                continue;
            };
            let img = read_image(&lossy(&name), b)?;
            if filter.matches(&|p: &[&str]| img.filter_field(p)) {
                out.push(img);
            }
        }
        Ok(out)
    }

    /// Creates an image; `AlreadyExists` if the name is taken. Returns it with its times set.
    pub fn create(&self, mut image: Image) -> Result<Image> {
        validate(&image)?;
        self.db.update(|tx| {
            let mut ib = create_path(tx, &[SCHEMA, self.ns.as_bytes(), IMAGES])?;
            if ib.bucket(image.name.as_bytes()).b()?.is_some() {
                return Err(Error::already_exists(format!("image {:?}", image.name)));
            }
            let mut b = ib.create_bucket(image.name.as_bytes()).b()?;
            image.created_at = SystemTime::now();
            image.updated_at = image.created_at;
            write_image(&mut b, &mut image)
        })?;
        Ok(image)
    }

    /// Updates the fields of image `image.name` named by `paths` (`labels`, `labels.<k>`,
    /// `annotations`, `annotations.<k>`, `target`); none replaces labels, annotations and
    /// target. Returns the stored image.
    pub fn update(&self, image: Image, paths: &[String]) -> Result<Image> {
        if image.name.is_empty() {
            return Err(Error::invalid_argument("image name is required for update"));
        }
        self.db.update(|tx| {
            let Some(mut b) = open_path(
                tx,
                &[SCHEMA, self.ns.as_bytes(), IMAGES, image.name.as_bytes()],
            )?
            else {
                return Err(not_found(&image.name));
            };
            let mut updated = read_image(&image.name, b.view())?;
            let created = updated.created_at;
            if paths.is_empty() {
                updated = image.clone();
            } else {
                for path in paths {
                    if fieldpath::update_map_path(
                        &mut updated.labels,
                        &image.labels,
                        path,
                        "labels",
                    )? {
                        continue;
                    }
                    if fieldpath::update_map_path(
                        &mut updated.target.annotations,
                        &image.target.annotations,
                        path,
                        "annotations",
                    )? {
                        continue;
                    }
                    if path == "target" {
                        updated.target = image.target.clone();
                        continue;
                    }
                    return Err(Error::invalid_argument(format!(
                        "cannot update {path:?} field on image {:?}",
                        image.name
                    )));
                }
            }
            validate(&updated)?;
            updated.created_at = created;
            updated.updated_at = SystemTime::now();
            write_image(&mut b, &mut updated)?;
            Ok(updated)
        })
    }

    /// Deletes image `name` and waits for the garbage collection it causes (containerd's
    /// synchronous delete).
    pub fn delete_sync(&self, name: &str) -> Result<crate::GcStats> {
        self.delete(name)?;
        self.db.collect_sync()
    }

    /// Deletes image `name`; `NotFound` when absent. The content it referenced becomes
    /// collectable.
    pub fn delete(&self, name: &str) -> Result<()> {
        self.db.update(|tx| {
            let Some(mut ib) = open_path(tx, &[SCHEMA, self.ns.as_bytes(), IMAGES])? else {
                return Err(not_found(name));
            };
            if ib.bucket(name.as_bytes()).b()?.is_none() {
                return Err(not_found(name));
            }
            ib.delete_bucket(name.as_bytes()).b()?;
            self.db.mark_dirty();
            Ok(())
        })
    }
}

/// containerd's `images.Store` over this namespace's images: the inherent methods, with a
/// synchronous delete waiting for the collection it causes.
impl Store for Images {
    fn get(&self, name: &str) -> Result<Image> {
        Images::get(self, name)
    }

    fn list(&self, filters: &[String]) -> Result<Vec<Image>> {
        Images::list(self, filters)
    }

    fn create(&self, image: Image) -> Result<Image> {
        Images::create(self, image)
    }

    fn update(&self, image: Image, fieldpaths: &[String]) -> Result<Image> {
        Images::update(self, image, fieldpaths)
    }

    fn delete(&self, name: &str, opts: DeleteOptions) -> Result<()> {
        if opts.synchronous {
            self.delete_sync(name).map(|_| ())
        } else {
            Images::delete(self, name)
        }
    }
}
