//! The image store conformance suite on meta.db's namespaced image store: namespaces
//! "testing" and "other" of one database, with a local content store as its backend (the
//! synchronous delete case checks the collection through the namespaced content view).

use std::sync::Arc;

use stowage_content::LocalStore;
use stowage_metadata::testsuite::images::TestImages;
use stowage_metadata::{Db, Options};

fn namespaced() -> TestImages {
    let dir = tempfile::tempdir().expect("temp dir");
    let backend = Arc::new(
        LocalStore::open(dir.path().join("io.containerd.content.v1.content"))
            .expect("content store"),
    );
    let db = Db::open(
        dir.path(),
        Options {
            content: Some(backend),
            ..Default::default()
        },
    )
    .expect("opening meta.db");
    let images = Arc::new(db.images("testing").expect("images"));
    let other = Arc::new(db.images("other").expect("images of another namespace"));
    let content = Arc::new(db.content_store("testing", None).expect("content view"));
    TestImages::new(images, other, content, (db, dir))
}

stowage_metadata::image_store_conformance!(namespaced);
