//! The content conformance suite against the local store (labels in memory, as containerd's
//! own local-store tests use).

use std::sync::Arc;

use stowage_content::testsuite::TestStore;
use stowage_content::LocalStore;

fn local_store() -> TestStore {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = LocalStore::with_memory_labels(dir.path().join("content")).expect("open store");
    TestStore::new(Arc::new(store), dir)
}

stowage_content::content_store_conformance!(local_store);

/// The suite must be able to fail: a store whose writers skip digest and size checks (and so
/// would store blobs under wrong names) is caught.
mod suite_catches_mutants {
    use std::io;
    use std::panic::{self, AssertUnwindSafe};
    use std::sync::Arc;

    use stowage_content::testsuite::{run_one, TestStore};
    use stowage_content::LocalStore;
    use stowage_core_types::content::{
        Info, IngestManager, Ingester, Manager, Provider, ReaderAt, Status, Writer, WriterOptions,
    };
    use stowage_core_types::{Descriptor, Digest, Labels, Result};

    #[derive(Debug)]
    struct Unverified(LocalStore);

    struct UnverifiedWriter(Box<dyn Writer>);

    impl io::Write for UnverifiedWriter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            self.0.flush()
        }
    }

    impl Writer for UnverifiedWriter {
        fn digest(&mut self) -> Digest {
            self.0.digest()
        }
        fn status(&self) -> Result<Status> {
            self.0.status()
        }
        fn commit(&mut self, _: Option<u64>, _: Option<&Digest>, labels: Labels) -> Result<()> {
            self.0.commit(None, None, labels)
        }
        fn truncate(&mut self, size: u64) -> Result<()> {
            self.0.truncate(size)
        }
    }

    impl Provider for Unverified {
        fn reader_at(&self, desc: &Descriptor) -> Result<Box<dyn ReaderAt>> {
            self.0.reader_at(desc)
        }
    }
    impl Ingester for Unverified {
        fn writer(&self, mut opts: WriterOptions) -> Result<Box<dyn Writer>> {
            opts.expected = None;
            Ok(Box::new(UnverifiedWriter(self.0.writer(opts)?)))
        }
    }
    impl Manager for Unverified {
        fn info(&self, digest: &Digest) -> Result<Info> {
            self.0.info(digest)
        }
        fn update(&self, info: Info, fieldpaths: &[String]) -> Result<Info> {
            self.0.update(info, fieldpaths)
        }
        fn walk(&self, f: &mut dyn FnMut(Info) -> Result<()>, filters: &[String]) -> Result<()> {
            self.0.walk(f, filters)
        }
        fn delete(&self, digest: &Digest) -> Result<()> {
            self.0.delete(digest)
        }
    }
    impl IngestManager for Unverified {
        fn status(&self, reference: &str) -> Result<Status> {
            self.0.status(reference)
        }
        fn list_statuses(&self, filters: &[String]) -> Result<Vec<Status>> {
            self.0.list_statuses(filters)
        }
        fn abort(&self, reference: &str) -> Result<()> {
            self.0.abort(reference)
        }
    }

    fn unverified() -> TestStore {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = LocalStore::with_memory_labels(dir.path()).expect("open store");
        TestStore::new(Arc::new(Unverified(store)), dir)
    }

    #[test]
    fn unverified_commits_fail_the_suite() {
        for case in ["commit_verifies_size_and_digest", "commit_error_state"] {
            let r = panic::catch_unwind(AssertUnwindSafe(|| run_one(case, &unverified)));
            assert!(
                r.is_err(),
                "{case} passed on a store that skips verification"
            );
        }
        // The honest cases still pass on it: the mutant differs only where it should.
        run_one("walk_filters", &unverified);
    }
}
