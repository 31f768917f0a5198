//! Namespaces, images, containers and leases: behaviour and the bytes they leave in meta.db.

use std::collections::BTreeMap;

use stowage_core_types::{Descriptor, Digest, ErrorKind, Labels};
use stowage_metadata::{Any, Container, Db, Image, Options, Resource, SPEC_TYPE_URL};

fn open() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), Options::default()).unwrap();
    (dir, db)
}

fn labels(kv: &[(&str, &str)]) -> Labels {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn digest(n: u8) -> Digest {
    Digest::parse(&format!("sha256:{}", format!("{n:02x}").repeat(32))).unwrap()
}

fn target(n: u8, mt: &str) -> Descriptor {
    Descriptor::new(mt, digest(n), 100 + n as u64)
}

const INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

#[test]
fn namespaces_lifecycle() {
    let (_d, db) = open();
    db.create_namespace("a", &labels(&[("x", "1")])).unwrap();
    db.create_namespace("b", &Labels::new()).unwrap();
    assert_eq!(
        db.create_namespace("a", &Labels::new()).unwrap_err().kind(),
        ErrorKind::AlreadyExists
    );
    assert_eq!(
        db.create_namespace("bad name", &Labels::new())
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidArgument
    );
    assert_eq!(db.list_namespaces().unwrap(), ["a", "b"]);
    assert_eq!(db.namespace_labels("a").unwrap(), labels(&[("x", "1")]));
    assert_eq!(
        db.namespace_labels("zz").unwrap_err().kind(),
        ErrorKind::NotFound
    );
    let got = db
        .update_namespace(
            "a",
            &labels(&[("y", "2")]),
            &["labels.y".into(), "labels.x".into()],
        )
        .unwrap();
    assert_eq!(got, labels(&[("y", "2")]));
    db.set_namespace_label("a", "z", "3").unwrap();
    db.set_namespace_label("a", "y", "").unwrap();
    assert_eq!(db.namespace_labels("a").unwrap(), labels(&[("z", "3")]));
    let err = db
        .update_namespace("a", &Labels::new(), &["name".into()])
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);

    db.images("a")
        .unwrap()
        .create(Image::new("img", target(1, INDEX)))
        .unwrap();
    db.leases("a").unwrap().create("l", &Labels::new()).unwrap();
    let err = db.delete_namespace("a").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    assert!(err.to_string().contains("images, leases"), "{err}");
    db.images("a").unwrap().delete("img").unwrap();
    db.leases("a").unwrap().delete("l").unwrap();
    db.delete_namespace("a").unwrap();
    assert_eq!(db.list_namespaces().unwrap(), ["b"]);
    assert_eq!(
        db.delete_namespace("a").unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[test]
fn images_crud_filters_and_bytes() {
    let (_d, db) = open();
    let images = db.images("default").unwrap();
    let mut img = Image::new("docker.io/library/a:1", target(1, INDEX));
    img.labels = labels(&[("team", "x"), ("empty", "")]);
    img.target.annotations = labels(&[("ann", "v")]);
    let created = images.create(img.clone()).unwrap();
    assert!(created.created_at > std::time::UNIX_EPOCH);
    assert_eq!(created.created_at, created.updated_at);
    assert_eq!(
        images.create(img.clone()).unwrap_err().kind(),
        ErrorKind::AlreadyExists
    );
    images.create(Image::new("b", target(2, MANIFEST))).unwrap();
    let got = images.get("docker.io/library/a:1").unwrap();
    assert_eq!(got.labels, labels(&[("team", "x")]));
    assert_eq!(got.target.annotations, labels(&[("ann", "v")]));
    assert_eq!(got.target.size, 101);
    assert_eq!(got.created_at, created.created_at);

    let names = |f: &[&str]| -> Vec<String> {
        let f: Vec<String> = f.iter().map(|s| s.to_string()).collect();
        images
            .list(&f)
            .unwrap()
            .into_iter()
            .map(|i| i.name)
            .collect()
    };
    assert_eq!(names(&[]), ["b", "docker.io/library/a:1"]);
    assert_eq!(names(&["name==b"]), ["b"]);
    assert_eq!(
        names(&[&format!("target.digest=={}", digest(1))]),
        ["docker.io/library/a:1"]
    );
    assert_eq!(names(&[&format!("target.mediatype=={MANIFEST}")]), ["b"]);
    assert_eq!(names(&["labels.team==x"]), ["docker.io/library/a:1"]);
    assert_eq!(names(&["labels.team"]), ["docker.io/library/a:1"]);
    assert_eq!(names(&["name==b", "labels.team==x"]).len(), 2);
    assert_eq!(
        images.list(&["name==".into()]).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );

    // Update by field paths.
    let mut upd = Image::new("b", target(3, INDEX));
    upd.labels = labels(&[("k", "v")]);
    let u = images.update(upd.clone(), &["labels.k".into()]).unwrap();
    assert_eq!(u.labels, labels(&[("k", "v")]));
    assert_eq!(u.target.digest, digest(2), "target untouched");
    assert!(u.updated_at >= u.created_at);
    let u = images.update(upd.clone(), &["target".into()]).unwrap();
    assert_eq!(u.target.digest, digest(3));
    let err = images.update(upd.clone(), &["name".into()]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.to_string().contains("cannot update \"name\""), "{err}");
    assert_eq!(
        images
            .update(Image::new("nope", target(1, INDEX)), &[])
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
    // Removing the labels removes the labels bucket itself.
    images
        .update(Image::new("b", target(3, INDEX)), &["labels".into()])
        .unwrap();
    // Bad input: label over the limit, zero size, empty media type.
    let mut big = Image::new("big", target(4, INDEX));
    big.labels = labels(&[("k", &"v".repeat(4096))]);
    assert_eq!(
        images.create(big).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    let mut zero = Image::new("zero", target(4, INDEX));
    zero.target.size = 0;
    assert_eq!(
        images.create(zero).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        images
            .create(Image::new("nomt", target(4, "")))
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidArgument
    );
    assert!(images.get("big").is_err());

    // Bytes as containerd writes them.
    {
        let tx = db.bolt().begin_read().unwrap();
        let ib = tx
            .bucket(b"v1")
            .unwrap()
            .unwrap()
            .bucket(b"default")
            .unwrap()
            .unwrap()
            .bucket(b"images")
            .unwrap()
            .unwrap();
        let a = ib.bucket(b"docker.io/library/a:1").unwrap().unwrap();
        let t = a.bucket(b"target").unwrap().unwrap();
        assert_eq!(
            t.get(b"digest").unwrap().unwrap(),
            digest(1).as_str().as_bytes()
        );
        assert_eq!(t.get(b"mediatype").unwrap().unwrap(), INDEX.as_bytes());
        assert_eq!(t.get(b"size").unwrap().unwrap(), &[0xca, 0x01]); // varint(101)
        assert_eq!(a.get(b"createdat").unwrap().unwrap().len(), 15);
        let l = a.bucket(b"labels").unwrap().unwrap();
        assert_eq!(l.get(b"team").unwrap(), Some(&b"x"[..]));
        assert_eq!(l.get(b"empty").unwrap(), None);
        let b = ib.bucket(b"b").unwrap().unwrap();
        assert!(b.bucket(b"labels").unwrap().is_none());
        assert!(b.bucket(b"annotations").unwrap().is_none());
    }
    images.delete("b").unwrap();
    assert_eq!(images.delete("b").unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(images.get("b").unwrap_err().kind(), ErrorKind::NotFound);
    assert!(db.dirty() >= 1);
}

fn spec() -> Any {
    Any::new(SPEC_TYPE_URL, br#"{"ociVersion":"1.0.2"}"#.to_vec())
}

#[test]
fn containers_crud_and_any_bytes() {
    let (_d, db) = open();
    let cs = db.containers("default").unwrap();
    let mut c = Container::new("c1", "io.containerd.runc.v2", spec());
    c.image = "docker.io/library/a:1".into();
    c.snapshotter = "overlayfs".into();
    c.snapshot_key = "c1".into();
    c.labels = labels(&[("role", "web")]);
    c.runtime.options = Some(Any::new(
        stowage_metadata::RUNC_OPTIONS_TYPE_URL,
        vec![0x08, 0x01],
    ));
    c.extensions = BTreeMap::from([("ext".to_string(), Any::new("x.y", vec![1, 2]))]);
    let created = cs.create(c.clone()).unwrap();
    assert_eq!(
        cs.create(c.clone()).unwrap_err().kind(),
        ErrorKind::AlreadyExists
    );
    let got = cs.get("c1").unwrap();
    assert_eq!(got, created);
    assert_eq!(got.spec, Some(spec()));
    assert_eq!(got.extensions["ext"], Any::new("x.y", vec![1, 2]));

    let mut bad = Container::new("c2", "", spec());
    assert_eq!(
        cs.create(bad.clone()).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    bad.runtime.name = "rt".into();
    bad.spec = None;
    assert_eq!(
        cs.create(bad.clone()).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    bad.spec = Some(spec());
    bad.snapshot_key = "k".into();
    assert_eq!(
        cs.create(bad.clone()).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    bad.snapshot_key.clear();
    cs.create(bad).unwrap();

    let ids = |f: &str| -> Vec<String> {
        cs.list(&[f.to_string()])
            .unwrap()
            .into_iter()
            .map(|c| c.id)
            .collect()
    };
    assert_eq!(ids("runtime.name==rt"), ["c2"]);
    assert_eq!(ids("labels.role==web"), ["c1"]);
    assert_eq!(ids("image==docker.io/library/a:1"), ["c1"]);
    assert_eq!(ids("id~=^c"), ["c1", "c2"]);

    let mut u = c.clone();
    u.labels = labels(&[("role", "db")]);
    u.image = "other".into();
    let out = cs.update(u.clone(), &["labels.role".into()]).unwrap();
    assert_eq!(out.labels["role"], "db");
    assert_eq!(out.image, "docker.io/library/a:1");
    let mut u2 = u.clone();
    u2.runtime.name = "other-rt".into();
    assert_eq!(
        cs.update(u2, &[]).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    u.extensions.clear();
    let out = cs.update(u.clone(), &[]).unwrap();
    assert_eq!(out.image, "other");
    assert!(out.extensions.is_empty());
    assert!(cs.get("c1").unwrap().extensions.is_empty());
    assert_eq!(
        cs.update(u.clone(), &["runtime".into()])
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidArgument
    );
    {
        let tx = db.bolt().begin_read().unwrap();
        let b = tx
            .bucket(b"v1")
            .unwrap()
            .unwrap()
            .bucket(b"default")
            .unwrap()
            .unwrap()
            .bucket(b"containers")
            .unwrap()
            .unwrap()
            .bucket(b"c1")
            .unwrap()
            .unwrap();
        let raw_spec = b.get(b"spec").unwrap().unwrap();
        assert_eq!(raw_spec[0], 0x0a);
        assert_eq!(raw_spec[1] as usize, SPEC_TYPE_URL.len());
        assert_eq!(
            &raw_spec[2..2 + SPEC_TYPE_URL.len()],
            SPEC_TYPE_URL.as_bytes()
        );
        let rt = b.bucket(b"runtime").unwrap().unwrap();
        assert_eq!(
            rt.get(b"name").unwrap(),
            Some(&b"io.containerd.runc.v2"[..])
        );
        assert_eq!(b.get(b"snapshotKey").unwrap(), Some(&b"c1"[..]));
    }
    cs.delete("c1").unwrap();
    assert_eq!(cs.delete("c1").unwrap_err().kind(), ErrorKind::NotFound);
}

#[test]
fn leases_and_resources() {
    let (_d, db) = open();
    let ls = db.leases("default").unwrap();
    let l = ls
        .create(
            "l1",
            &labels(&[("containerd.io/gc.expire", "2099-01-01T00:00:00Z")]),
        )
        .unwrap();
    assert_eq!(l.labels.len(), 1);
    ls.create("l2", &Labels::new()).unwrap();
    assert_eq!(
        ls.create("l1", &Labels::new()).unwrap_err().kind(),
        ErrorKind::AlreadyExists
    );
    assert_eq!(
        ls.create("", &Labels::new()).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    let ids: Vec<String> = ls.list(&[]).unwrap().into_iter().map(|l| l.id).collect();
    assert_eq!(ids, ["l1", "l2"]);
    let ids: Vec<String> = ls
        .list(&["labels.\"containerd.io/gc.expire\"".into()])
        .unwrap()
        .into_iter()
        .map(|l| l.id)
        .collect();
    assert_eq!(ids, ["l1"]);
    assert_eq!(ls.list(&[]).unwrap()[0].created_at, l.created_at);

    ls.add_resource("l1", &Resource::content(&digest(1)))
        .unwrap();
    ls.add_resource("l1", &Resource::snapshot("overlayfs", "k1"))
        .unwrap();
    ls.add_resource("l1", &Resource::ingest("ref1")).unwrap();
    let bad = Resource {
        id: "notadigest".into(),
        kind: "content".into(),
    };
    assert_eq!(
        ls.add_resource("l1", &bad).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    let bad = Resource {
        id: "x".into(),
        kind: "snapshots".into(),
    };
    assert_eq!(
        ls.add_resource("l1", &bad).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    let bad = Resource {
        id: "x".into(),
        kind: "things".into(),
    };
    assert_eq!(
        ls.add_resource("l1", &bad).unwrap_err().kind(),
        ErrorKind::NotImplemented
    );
    assert_eq!(
        ls.add_resource("nope", &Resource::ingest("r"))
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        ls.list_resources("l1").unwrap(),
        vec![
            Resource::content(&digest(1)),
            Resource::ingest("ref1"),
            Resource::snapshot("overlayfs", "k1"),
        ]
    );
    ls.delete_resource("l1", &Resource::ingest("ref1")).unwrap();
    ls.delete_resource("l1", &Resource::snapshot("native", "zz"))
        .unwrap();
    assert_eq!(ls.list_resources("l1").unwrap().len(), 2);
    ls.delete("l1").unwrap();
    assert_eq!(ls.delete("l1").unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(
        ls.list_resources("l1").unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[test]
fn bad_input_is_refused_and_nothing_is_half_written() {
    let (_d, db) = open();
    for bad in ["", "a b", "-lead", "trail.", &"x".repeat(77)] {
        assert_eq!(
            db.images(bad).unwrap_err().kind(),
            ErrorKind::InvalidArgument,
            "{bad:?}"
        );
        assert!(db.containers(bad).is_err() && db.leases(bad).is_err());
    }
    let images = db.images("default").unwrap();
    let mut img = Image::new("img", target(1, INDEX));
    img.labels = labels(&[("keep", "me")]);
    let before = images.create(img).unwrap();
    // A failing update (a later path is invalid) changes nothing, not even the earlier paths.
    let mut upd = Image::new("img", target(2, INDEX));
    upd.labels = labels(&[("new", "x")]);
    let err = images
        .update(upd.clone(), &["labels.new".into(), "bogus".into()])
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert_eq!(images.get("img").unwrap(), before);
    // A target that fails validation is refused whole.
    upd.target.size = 0;
    assert_eq!(
        images.update(upd, &["target".into()]).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    assert_eq!(images.get("img").unwrap(), before);
    // Labels over the limit on update.
    let mut big = Image::new("img", target(1, INDEX));
    big.labels = labels(&[("k", &"v".repeat(5000))]);
    assert_eq!(
        images.update(big, &["labels.k".into()]).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    assert_eq!(images.get("img").unwrap(), before);
    // Malformed filters name the problem.
    for f in ["name==", "labels.\"unterminated", "name~=(["] {
        let err = images.list(&[f.to_string()]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{f}: {err}");
    }
    let err = db
        .leases("default")
        .unwrap()
        .list(&["id==a,,".into()])
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    // A failed namespace label update leaves the old labels.
    db.create_namespace("n1", &labels(&[("a", "1")])).unwrap();
    let err = db
        .update_namespace("n1", &labels(&[("a", &"v".repeat(5000))]), &[])
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert_eq!(db.namespace_labels("n1").unwrap(), labels(&[("a", "1")]));
}

/// Damaged records read as errors (or as containerd reads them), never as panics.
#[test]
fn damaged_records_are_errors_not_panics() {
    let (_d, db) = open();
    db.images("default")
        .unwrap()
        .create(Image::new("img", target(1, INDEX)))
        .unwrap();
    let mut c = Container::new("c", "rt", spec());
    c.runtime.options = Some(Any::new("x", vec![1]));
    db.containers("default").unwrap().create(c).unwrap();
    {
        let mut tx = db.bolt().begin_write().unwrap();
        let v1 = tx.bucket_mut(b"v1").unwrap().unwrap();
        let mut ns = v1.into_bucket_mut(b"default").unwrap().unwrap();
        {
            let imgs = ns.bucket_mut(b"images").unwrap().unwrap();
            let mut i = imgs.into_bucket_mut(b"img").unwrap().unwrap();
            i.put(b"createdat", &[1, 2, 3]).unwrap();
            let mut t = i.into_bucket_mut(b"target").unwrap().unwrap();
            // containerd reads a bad varint as 0.
            t.put(b"size", &[0xff]).unwrap();
        }
        let cs = ns.into_bucket_mut(b"containers").unwrap().unwrap();
        let mut c = cs.into_bucket_mut(b"c").unwrap().unwrap();
        c.put(b"spec", &[0x0a, 0x7f, b'x']).unwrap();
        tx.commit().unwrap();
    }
    let err = db.images("default").unwrap().get("img").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DataLoss, "{err}");
    assert!(err.to_string().contains("createdat"), "{err}");
    assert_eq!(
        db.images("default").unwrap().list(&[]).unwrap_err().kind(),
        ErrorKind::DataLoss
    );
    let err = db.containers("default").unwrap().get("c").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DataLoss, "{err}");
    // The collector does not trip over them either.
    db.collect().unwrap();
}
