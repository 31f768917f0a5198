//! The image store conformance suite (`core_types::image::Store`), run by the namespaced
//! store here, by the gRPC client against stowaged and by the same client against
//! containerd 1.6, which pins the semantics down to containerd's.
//!
//! It covers what containerd's image store promises: the create/get round trip with times
//! set by the store, `AlreadyExists` and `NotFound`, validation, listing with containerd
//! filters, updates by field path, isolation between namespaces, delete, and a synchronous
//! delete that has collected what only the image held by the time it returns.
//!
//! Run it as one `#[test]` per case with
//! [`image_store_conformance!`](crate::image_store_conformance), or all at once with
//! [`run_all`]. Every case gets fresh, empty stores from the factory.

use std::any::Any;
use std::io::Write;
use std::sync::{Arc, Barrier};
use std::time::SystemTime;

use stowage_core_types::content;
use stowage_core_types::image::{DeleteOptions, Image, Store};
use stowage_core_types::{Descriptor, Digest, ErrorKind, Labels, Result};

/// The stores one case works on, kept alive with whatever backs them (a temp dir, a daemon).
pub struct TestImages {
    /// The image store under test, in one namespace.
    pub images: Arc<dyn Store>,
    /// The same kind of store over the same backend, in another namespace.
    pub other_namespace: Arc<dyn Store>,
    /// The content store of `images`' namespace (the synchronous delete case writes a blob
    /// only an image holds).
    pub content: Arc<dyn content::Store>,
    // Dropped after the stores (field order), so a temp dir or daemon outlives them.
    _guard: Box<dyn Any + Send>,
}

impl std::fmt::Debug for TestImages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestImages").finish_non_exhaustive()
    }
}

impl TestImages {
    /// Wraps the stores; `guard` is dropped after them.
    pub fn new(
        images: Arc<dyn Store>,
        other_namespace: Arc<dyn Store>,
        content: Arc<dyn content::Store>,
        guard: impl Any + Send,
    ) -> Self {
        TestImages {
            images,
            other_namespace,
            content,
            _guard: Box::new(guard),
        }
    }
}

/// One case of the suite.
pub type Case = fn(&TestImages);

/// Every case, by name.
pub const CASES: &[(&str, Case)] = &[
    ("create_get_round_trip", create_get_round_trip),
    ("create_existing", create_existing),
    ("missing_images", missing_images),
    ("invalid_images", invalid_images),
    ("names_are_opaque", names_are_opaque),
    ("empty_values_dropped", empty_values_dropped),
    ("list_filters", list_filters),
    ("update_labels", update_labels),
    ("update_single_label", update_single_label),
    ("update_target", update_target),
    ("update_annotations", update_annotations),
    ("update_everything", update_everything),
    ("update_invalid", update_invalid),
    ("namespaces_isolate", namespaces_isolate),
    ("delete_then_get", delete_then_get),
    ("synchronous_delete", synchronous_delete),
    ("concurrent_create", concurrent_create),
    ("concurrent_label_updates", concurrent_label_updates),
];

/// Runs the case `name` on fresh stores from `factory`. Panics when it fails or is unknown.
pub fn run_one(name: &str, factory: &dyn Fn() -> TestImages) {
    let Some((_, case)) = CASES.iter().find(|(n, _)| *n == name) else {
        panic!("no image store conformance case named {name:?}");
    };
    let fixture = factory();
    case(&fixture);
}

/// Runs every case, each on fresh stores, and panics listing the ones that failed.
pub fn run_all(factory: &dyn Fn() -> TestImages) {
    stowage_core_types::conformance::run_all(
        "image store",
        CASES.iter().map(|(n, _)| *n),
        |name| run_one(name, factory),
    );
}

/// Generates one `#[test]` per conformance case, each calling `$factory` (an expression of
/// type `impl Fn() -> TestImages`) for fresh stores.
///
/// ```ignore
/// stowage_metadata::image_store_conformance!(my_factory);
/// ```
#[macro_export]
macro_rules! image_store_conformance {
    ($factory:expr) => {
        $crate::image_store_conformance!(@cases $factory;
            create_get_round_trip create_existing missing_images invalid_images
            names_are_opaque empty_values_dropped list_filters update_labels update_single_label update_target
            update_annotations update_everything update_invalid namespaces_isolate
            delete_then_get synchronous_delete concurrent_create
            concurrent_label_updates);
    };
    (@cases $factory:expr; $($name:ident)*) => {
        $(
            #[test]
            fn $name() {
                $crate::testsuite::images::run_one(stringify!($name), &$factory);
            }
        )*
    };
}

const INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// A well-formed digest, distinct per seed (targets need not exist in any content store).
fn digest(seed: u64) -> Digest {
    Digest::parse(&format!("sha256:{seed:064x}")).expect("a well-formed digest")
}

fn target(media_type: &str, seed: u64, size: u64) -> Descriptor {
    Descriptor::new(media_type, digest(seed), size)
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn image(name: &str, target: Descriptor, lbls: &[(&str, &str)]) -> Image {
    let mut i = Image::new(name, target);
    i.labels = labels(lbls);
    i
}

fn paths(p: &[&str]) -> Vec<String> {
    p.iter().map(|s| s.to_string()).collect()
}

fn expect_kind<T: std::fmt::Debug>(r: Result<T>, kind: ErrorKind, what: &str) {
    match r {
        Ok(v) => panic!("{what}: expected {kind:?}, got Ok({v:?})"),
        Err(e) => assert_eq!(e.kind(), kind, "{what}: {e}"),
    }
}

fn names(images: &[Image]) -> Vec<&str> {
    images.iter().map(|i| i.name.as_str()).collect()
}

fn list(store: &dyn Store, filters: &[&str]) -> Vec<String> {
    let got = store
        .list(&paths(filters))
        .unwrap_or_else(|e| panic!("list {filters:?}: {e}"));
    names(&got).into_iter().map(String::from).collect()
}

/// What the store keeps of a target: media type, digest, size and annotations.
fn stored(mut d: Descriptor) -> Descriptor {
    d.urls.clear();
    d.platform = None;
    d.artifact_type = None;
    d
}

fn within(t: SystemTime, (t0, t1): (SystemTime, SystemTime), what: &str) {
    assert!(
        t0 <= t && t <= t1,
        "{what} {t:?} is outside the call's window [{t0:?}, {t1:?}]"
    );
}

/// Create returns the image as stored, with both times set by the store inside the call's
/// window (the caller's times are ignored); get returns the same record.
pub fn create_get_round_trip(t: &TestImages) {
    let s = &*t.images;
    let mut tgt = target(INDEX, 1, 1234);
    tgt.annotations = labels(&[
        ("org.opencontainers.image.ref.name", "1.0"),
        ("example.com/note", "a value with spaces"),
    ]);
    let mut img = image(
        "docker.io/library/round:trip",
        tgt.clone(),
        &[("a", "1"), ("containerd.io/gc.ref.content.m.0", "sha256:x")],
    );
    img.created_at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
    img.updated_at = img.created_at;
    let t0 = SystemTime::now();
    let created = s.create(img.clone()).expect("create");
    let t1 = SystemTime::now();
    assert_eq!(created.name, img.name);
    assert_eq!(created.labels, img.labels);
    assert_eq!(stored(created.target.clone()), tgt);
    within(created.created_at, (t0, t1), "created_at");
    assert_eq!(
        created.updated_at, created.created_at,
        "updated_at at create"
    );

    let got = s.get(&img.name).expect("get");
    assert_eq!(got, created, "get returns what create returned");
    assert_eq!(s.list(&[]).expect("list"), vec![got]);
}

/// Creating a taken name fails with `AlreadyExists` and leaves the first image as it was.
pub fn create_existing(t: &TestImages) {
    let s = &*t.images;
    let first = s
        .create(image("dup", target(MANIFEST, 2, 10), &[("v", "first")]))
        .expect("create");
    expect_kind(
        s.create(image("dup", target(INDEX, 3, 20), &[("v", "second")])),
        ErrorKind::AlreadyExists,
        "create of an existing name",
    );
    assert_eq!(s.get("dup").expect("get"), first);
}

/// Get, update and delete of names the namespace does not hold fail with `NotFound`, both
/// before the namespace has any image and after, and an update does so before it looks at
/// what it was given.
pub fn missing_images(t: &TestImages) {
    let s = &*t.images;
    assert!(s.list(&[]).expect("list of an empty store").is_empty());
    for round in ["empty store", "store with an image"] {
        expect_kind(s.get("missing"), ErrorKind::NotFound, round);
        expect_kind(
            s.update(
                image("missing", target(MANIFEST, 4, 10), &[("a", "b")]),
                &paths(&["labels"]),
            ),
            ErrorKind::NotFound,
            round,
        );
        // containerd looks the image up before it validates the result.
        expect_kind(
            s.update(image("missing", target("", 4, 0), &[]), &paths(&["target"])),
            ErrorKind::NotFound,
            round,
        );
        expect_kind(
            s.delete("missing", DeleteOptions::default()),
            ErrorKind::NotFound,
            round,
        );
        expect_kind(
            s.delete("missing", DeleteOptions::synchronous()),
            ErrorKind::NotFound,
            round,
        );
        if round == "empty store" {
            s.create(image("present", target(MANIFEST, 5, 10), &[]))
                .expect("create");
        }
    }
    assert_eq!(list(s, &[]), ["present"]);
}

/// containerd checks a name is present, labels are within bounds and the target has a size
/// and a media type; a failed create stores nothing.
pub fn invalid_images(t: &TestImages) {
    let s = &*t.images;
    expect_kind(
        s.create(image("", target(MANIFEST, 6, 10), &[])),
        ErrorKind::InvalidArgument,
        "empty name",
    );
    expect_kind(
        s.create(image("no-size", target(MANIFEST, 6, 0), &[])),
        ErrorKind::InvalidArgument,
        "target of size zero",
    );
    expect_kind(
        s.create(image("no-media-type", target("", 6, 10), &[])),
        ErrorKind::InvalidArgument,
        "target without a media type",
    );
    // containerd's bound is on key and value together: 4096 bytes pass, 4097 do not.
    let over = "v".repeat(4096);
    expect_kind(
        s.create(image("big-label", target(MANIFEST, 6, 10), &[("k", &over)])),
        ErrorKind::InvalidArgument,
        "label of 4097 bytes",
    );
    assert!(
        s.list(&[]).expect("list").is_empty(),
        "failed creates stored nothing"
    );
    let most = "v".repeat(4095);
    s.create(image("at-bound", target(MANIFEST, 6, 10), &[("k", &most)]))
        .expect("a label of 4096 bytes");
    s.delete("at-bound", DeleteOptions::default())
        .expect("delete");
    assert!(
        s.list(&[]).expect("list").is_empty(),
        "failed creates stored nothing"
    );
}

/// Image names are not parsed: anything non-empty is a name, and comes back unchanged.
pub fn names_are_opaque(t: &TestImages) {
    let s = &*t.images;
    let odd = [
        "docker.io/library/alpine:3.18",
        &format!("registry.example.com:5000/a/b@sha256:{:064x}", 7),
        "not a reference",
        "UPPER/case",
        "ünïcödé",
        "-",
    ];
    for (i, name) in odd.iter().enumerate() {
        s.create(image(name, target(MANIFEST, 10 + i as u64, 10), &[]))
            .unwrap_or_else(|e| panic!("create {name:?}: {e}"));
    }
    for name in odd {
        assert_eq!(s.get(name).expect("get").name, name);
    }
    let mut want: Vec<&str> = odd.to_vec();
    want.sort();
    assert_eq!(list(s, &[]), want, "listed in byte order of the names");
}

/// Labels and annotations with empty values are not stored, and what create and update
/// return already lacks them.
pub fn empty_values_dropped(t: &TestImages) {
    let s = &*t.images;
    let mut tgt = target(MANIFEST, 19, 10);
    tgt.annotations = labels(&[("empty", ""), ("kept", "a")]);
    let created = s
        .create(image("img", tgt, &[("empty", ""), ("kept", "1")]))
        .expect("create");
    assert_eq!(created.labels, labels(&[("kept", "1")]));
    assert_eq!(created.target.annotations, labels(&[("kept", "a")]));
    assert_eq!(s.get("img").expect("get"), created);
    let mut tgt = target(MANIFEST, 19, 10);
    tgt.annotations = labels(&[("kept", ""), ("new", "b")]);
    let updated = s
        .update(image("img", tgt, &[("kept", ""), ("new", "2")]), &[])
        .expect("update");
    assert_eq!(updated.labels, labels(&[("new", "2")]));
    assert_eq!(updated.target.annotations, labels(&[("new", "b")]));
    assert_eq!(s.get("img").expect("get"), updated);
}

/// containerd's filter language over name, target and label/annotation fields; several
/// filters are alternatives, comma-separated selectors within one must all match.
pub fn list_filters(t: &TestImages) {
    let s = &*t.images;
    let mut a = image(
        "docker.io/library/a:1",
        target(INDEX, 20, 100),
        &[("env", "prod"), ("dotted.key", "x")],
    );
    a.target.annotations = labels(&[("org.opencontainers.image.ref.name", "1")]);
    let b = image(
        "docker.io/library/b:2",
        target(MANIFEST, 21, 200),
        &[("env", "dev")],
    );
    let c = image(
        "example.com/c:3",
        target(DOCKER_MANIFEST, 22, 300),
        &[("team", "x")],
    );
    for i in [a, b, c] {
        s.create(i).expect("create");
    }
    let (a, b, c) = (
        "docker.io/library/a:1",
        "docker.io/library/b:2",
        "example.com/c:3",
    );
    assert_eq!(list(s, &[]), [a, b, c]);
    assert_eq!(list(s, &[&format!("name=={b}")]), [b]);
    assert_eq!(list(s, &[&format!("name=={b:?}")]), [b], "quoted value");
    assert_eq!(list(s, &["name~=^docker\\.io/"]), [a, b]);
    assert_eq!(list(s, &["name~=c:[0-9]$"]), [c]);
    assert_eq!(list(s, &["labels.env==prod"]), [a]);
    assert_eq!(list(s, &[r#"labels."dotted.key"==x"#]), [a]);
    assert_eq!(list(s, &["labels.env"]), [a, b], "presence");
    assert_eq!(
        list(s, &["labels.env!=prod"]),
        [b, c],
        "absent compares as empty"
    );
    assert_eq!(list(s, &[&format!("target.mediatype=={MANIFEST}")]), [b]);
    assert_eq!(list(s, &["target.mediatype~=manifest"]), [b, c]);
    assert_eq!(list(s, &[&format!("target.digest=={}", digest(22))]), [c]);
    assert_eq!(
        list(s, &["annotations.\"org.opencontainers.image.ref.name\"==1"]),
        [a]
    );
    assert_eq!(
        list(s, &["labels.team==x", "labels.env==prod"]),
        [a, c],
        "alternatives"
    );
    assert_eq!(
        list(s, &["labels.env==dev,name~=library"]),
        [b],
        "conjunction"
    );
    assert_eq!(
        list(s, &["labels.env==dev,name~=example"]),
        Vec::<String>::new()
    );
    assert_eq!(list(s, &["name==nothing"]), Vec::<String>::new());
    expect_kind(
        s.list(&paths(&["name=="])),
        ErrorKind::InvalidArgument,
        "a filter without a value",
    );
}

/// `labels` replaces every label and nothing else: the target stays, whatever (even invalid)
/// the request carries; created_at is kept and updated_at moves into the call's window.
pub fn update_labels(t: &TestImages) {
    let s = &*t.images;
    let created = s
        .create(image(
            "img",
            target(MANIFEST, 30, 10),
            &[("a", "1"), ("b", "2")],
        ))
        .expect("create");
    // The request's target is not looked at, even an invalid one.
    let req = image("img", target("", 31, 0), &[("c", "3")]);
    let t0 = SystemTime::now();
    let updated = s.update(req, &paths(&["labels"])).expect("update");
    let t1 = SystemTime::now();
    assert_eq!(updated.labels, labels(&[("c", "3")]));
    assert_eq!(updated.target, created.target, "target untouched");
    assert_eq!(updated.created_at, created.created_at, "created_at kept");
    within(updated.updated_at, (t0, t1), "updated_at");
    assert_eq!(s.get("img").expect("get"), updated);
}

/// `labels.<key>` sets that one label, or removes it when the request does not carry it.
pub fn update_single_label(t: &TestImages) {
    let s = &*t.images;
    s.create(image(
        "img",
        target(MANIFEST, 32, 10),
        &[("a", "1"), ("b", "2")],
    ))
    .expect("create");
    let req = image(
        "img",
        target(MANIFEST, 32, 10),
        &[("a", "changed"), ("c", "3")],
    );
    let u = s.update(req, &paths(&["labels.c"])).expect("update");
    assert_eq!(u.labels, labels(&[("a", "1"), ("b", "2"), ("c", "3")]));
    let req = image("img", target(MANIFEST, 32, 10), &[]);
    let u = s.update(req, &paths(&["labels.a"])).expect("update");
    assert_eq!(u.labels, labels(&[("b", "2"), ("c", "3")]), "a removed");
    let req = image("img", target(MANIFEST, 32, 10), &[("x.y", "z")]);
    let u = s.update(req, &paths(&["labels.x.y"])).expect("update");
    assert_eq!(u.labels.get("x.y").map(String::as_str), Some("z"));
    assert_eq!(s.get("img").expect("get").labels, u.labels);
}

/// `target` replaces the whole target (annotations included) and leaves the labels.
pub fn update_target(t: &TestImages) {
    let s = &*t.images;
    let mut old = target(MANIFEST, 33, 10);
    old.annotations = labels(&[("old", "1")]);
    let created = s
        .create(image("img", old, &[("keep", "me")]))
        .expect("create");
    let mut new = target(INDEX, 34, 4321);
    new.annotations = labels(&[("new", "2")]);
    let req = image("img", new.clone(), &[("ignored", "yes")]);
    let u = s.update(req, &paths(&["target"])).expect("update");
    assert_eq!(stored(u.target.clone()), new);
    assert_eq!(u.labels, created.labels, "labels untouched");
    assert_eq!(s.get("img").expect("get"), u);
    assert_eq!(
        list(s, &[&format!("target.digest=={}", digest(34))]),
        ["img"],
        "listing sees the new target"
    );
}

/// `annotations.<key>` and `annotations` update the target's annotations only.
pub fn update_annotations(t: &TestImages) {
    let s = &*t.images;
    let mut tgt = target(MANIFEST, 35, 10);
    tgt.annotations = labels(&[("a", "1"), ("b", "2")]);
    s.create(image("img", tgt.clone(), &[("l", "1")]))
        .expect("create");
    let mut other = target(INDEX, 36, 99);
    other.annotations = labels(&[("b", "changed"), ("c", "3")]);
    let req = image("img", other.clone(), &[]);
    let u = s
        .update(req.clone(), &paths(&["annotations.b"]))
        .expect("update");
    assert_eq!(
        u.target.annotations,
        labels(&[("a", "1"), ("b", "changed")])
    );
    assert_eq!(u.target.digest, tgt.digest, "digest untouched");
    assert_eq!(u.target.media_type, tgt.media_type);
    assert_eq!(u.labels, labels(&[("l", "1")]));
    let u = s.update(req, &paths(&["annotations"])).expect("update");
    assert_eq!(u.target.annotations, other.annotations);
    assert_eq!(u.target.digest, tgt.digest, "digest untouched");
    assert_eq!(s.get("img").expect("get"), u);
}

/// No field paths: labels and target both come from the request.
pub fn update_everything(t: &TestImages) {
    let s = &*t.images;
    let created = s
        .create(image("img", target(MANIFEST, 37, 10), &[("a", "1")]))
        .expect("create");
    let mut new = target(DOCKER_MANIFEST, 38, 77);
    new.annotations = labels(&[("n", "1")]);
    let u = s
        .update(image("img", new.clone(), &[("b", "2")]), &[])
        .expect("update");
    assert_eq!(u.labels, labels(&[("b", "2")]));
    assert_eq!(stored(u.target.clone()), new);
    assert_eq!(u.created_at, created.created_at);
    assert!(u.updated_at >= created.updated_at);
    assert_eq!(s.get("img").expect("get"), u);
}

/// Unknown or immutable fields, an empty name and an invalid result are `InvalidArgument`;
/// a failed update changes nothing.
pub fn update_invalid(t: &TestImages) {
    let s = &*t.images;
    let created = s
        .create(image("img", target(MANIFEST, 39, 10), &[("a", "1")]))
        .expect("create");
    let req = image("img", target(MANIFEST, 39, 10), &[("a", "2")]);
    for p in ["name", "createdat", "target.digest", "size"] {
        expect_kind(
            s.update(req.clone(), &paths(&["labels", p])),
            ErrorKind::InvalidArgument,
            &format!("update of field {p:?}"),
        );
    }
    expect_kind(
        s.update(
            image("", target(MANIFEST, 39, 10), &[]),
            &paths(&["labels"]),
        ),
        ErrorKind::InvalidArgument,
        "update without a name",
    );
    expect_kind(
        s.update(
            image("img", target(MANIFEST, 40, 0), &[]),
            &paths(&["target"]),
        ),
        ErrorKind::InvalidArgument,
        "target of size zero",
    );
    expect_kind(
        s.update(image("img", target("", 40, 10), &[]), &[]),
        ErrorKind::InvalidArgument,
        "target without a media type",
    );
    let big = "v".repeat(5000);
    expect_kind(
        s.update(
            image("img", target(MANIFEST, 39, 10), &[("k", &big)]),
            &paths(&["labels.k"]),
        ),
        ErrorKind::InvalidArgument,
        "label over 4096 bytes",
    );
    assert_eq!(s.get("img").expect("get"), created, "nothing changed");
}

/// Names are per namespace: the same name in two namespaces is two images, each invisible
/// to, and unaffected by, the other.
pub fn namespaces_isolate(t: &TestImages) {
    let (a, b) = (&*t.images, &*t.other_namespace);
    let in_a = a
        .create(image("shared", target(MANIFEST, 41, 10), &[("ns", "a")]))
        .expect("create in a");
    expect_kind(b.get("shared"), ErrorKind::NotFound, "get from b");
    assert!(b.list(&[]).expect("list b").is_empty());
    expect_kind(
        b.delete("shared", DeleteOptions::default()),
        ErrorKind::NotFound,
        "delete from b",
    );
    let in_b = b
        .create(image("shared", target(INDEX, 42, 20), &[("ns", "b")]))
        .expect("create the same name in b");
    b.update(
        image("shared", target(INDEX, 42, 20), &[("ns", "b2")]),
        &paths(&["labels"]),
    )
    .expect("update in b");
    assert_eq!(
        a.get("shared").expect("get a"),
        in_a,
        "b's update left a alone"
    );
    a.delete("shared", DeleteOptions::default())
        .expect("delete in a");
    let still = b.get("shared").expect("b keeps its image");
    assert_eq!(still.target, in_b.target);
    assert_eq!(still.labels, labels(&[("ns", "b2")]));
}

/// A deleted image is gone from get and list, and its name can be created again.
pub fn delete_then_get(t: &TestImages) {
    let s = &*t.images;
    s.create(image("gone", target(MANIFEST, 43, 10), &[]))
        .expect("create");
    s.create(image("stays", target(MANIFEST, 44, 10), &[]))
        .expect("create");
    s.delete("gone", DeleteOptions::default()).expect("delete");
    expect_kind(s.get("gone"), ErrorKind::NotFound, "get after delete");
    expect_kind(
        s.delete("gone", DeleteOptions::default()),
        ErrorKind::NotFound,
        "second delete",
    );
    assert_eq!(list(s, &[]), ["stays"]);
    let again = s
        .create(image("gone", target(INDEX, 45, 20), &[]))
        .expect("create the name again");
    assert_eq!(again.target.digest, digest(45));
}

/// Writes `data` and creates `name` pointing at it before committing, so no collection can
/// take the blob between the two.
fn image_holding_blob(t: &TestImages, name: &str, data: &[u8]) -> Digest {
    let mut w = t
        .content
        .writer(content::WriterOptions::with_ref(format!("blob-for-{name}")))
        .expect("open a writer");
    w.write_all(data).expect("write the blob");
    let d = w.digest();
    let tgt = Descriptor::new(MANIFEST, d.clone(), data.len() as u64);
    t.images
        .create(image(name, tgt, &[]))
        .expect("create the image");
    w.commit(Some(data.len() as u64), Some(&d), Labels::new())
        .expect("commit the blob");
    d
}

/// A synchronous delete returns once the collection it caused has run: the blob only the
/// deleted image held is gone, the one another image holds stays.
pub fn synchronous_delete(t: &TestImages) {
    let gone = image_holding_blob(t, "dropped", b"held only by the dropped image");
    let kept = image_holding_blob(t, "kept", b"held by the kept image");
    t.content.info(&gone).expect("the blob is there while held");
    t.images
        .delete("dropped", DeleteOptions::synchronous())
        .expect("synchronous delete");
    expect_kind(
        t.content.info(&gone),
        ErrorKind::NotFound,
        "the dropped image's blob after a synchronous delete",
    );
    t.content
        .info(&kept)
        .expect("a blob another image holds stays");
    expect_kind(
        t.images.get("dropped"),
        ErrorKind::NotFound,
        "get after delete",
    );
}

/// Racing creates of one name: exactly one wins, the rest get `AlreadyExists`.
pub fn concurrent_create(t: &TestImages) {
    const N: usize = 6;
    let barrier = Arc::new(Barrier::new(N));
    let results: Vec<Result<Image>> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..N)
            .map(|i| {
                let (s, barrier) = (t.images.clone(), barrier.clone());
                sc.spawn(move || {
                    barrier.wait();
                    let v = i.to_string();
                    s.create(image(
                        "race",
                        target(MANIFEST, 50 + i as u64, 10),
                        &[("i", &v)],
                    ))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("creator thread"))
            .collect()
    });
    let winners: Vec<&Image> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(winners.len(), 1, "exactly one create wins: {results:?}");
    for r in &results {
        if let Err(e) = r {
            assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
        }
    }
    assert_eq!(&t.images.get("race").expect("get"), winners[0]);
}

/// Racing updates of distinct labels through `labels.<key>` paths all land: each update is
/// applied to the image as the previous one left it.
pub fn concurrent_label_updates(t: &TestImages) {
    const N: usize = 6;
    t.images
        .create(image("img", target(MANIFEST, 60, 10), &[("base", "1")]))
        .expect("create");
    let barrier = Arc::new(Barrier::new(N));
    std::thread::scope(|sc| {
        for i in 0..N {
            let (s, barrier) = (t.images.clone(), barrier.clone());
            sc.spawn(move || {
                let key = format!("k{i}");
                barrier.wait();
                let req = image("img", target(MANIFEST, 60, 10), &[(&key, "set")]);
                s.update(req, &[format!("labels.{key}")])
                    .unwrap_or_else(|e| panic!("update of {key}: {e}"));
            });
        }
    });
    let mut want = labels(&[("base", "1")]);
    for i in 0..N {
        want.insert(format!("k{i}"), "set".into());
    }
    assert_eq!(t.images.get("img").expect("get").labels, want);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macro_lists_every_case() {
        // The macro repeats the case names; keep it in step with CASES.
        let src = include_str!("images.rs");
        let macro_body = src
            .split("(@cases $factory;")
            .nth(1)
            .and_then(|s| s.split(");").next())
            .unwrap_or_default();
        let in_macro: Vec<&str> = macro_body.split_whitespace().collect();
        let in_cases: Vec<&str> = CASES.iter().map(|(n, _)| *n).collect();
        assert_eq!(in_macro, in_cases);
    }
}
