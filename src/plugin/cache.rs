//! Compiled plugins on disk, so a restart (or a second process on the same
//! data directory) does not compile every plugin again.
//!
//! An artifact is keyed by the component's sha256 and by the engine's
//! compatibility hash (wasmtime version, target, every setting that changes
//! the code), so a stale one is never loaded: a new engine simply misses.
//! Files are written to a temporary name and renamed into place. The
//! directory must be writable only by seedgate: an artifact is native code,
//! loaded without validation.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

pub struct ArtifactCache {
    dir: PathBuf,
    /// The engine's compatibility hash, in every file name.
    engine_key: String,
}

impl ArtifactCache {
    pub fn open(dir: &Path, engine: &Engine) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("plugins.cache_dir {}: {e}", dir.display()))?;
        let mut h = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        Ok(Self {
            dir: dir.to_owned(),
            engine_key: format!("{:016x}", h.finish()),
        })
    }

    fn path(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}-{}.cwasm", self.engine_key))
    }

    /// The cached component for `digest`, if one is there and loads.
    pub fn get(&self, engine: &Engine, digest: &str) -> Option<Component> {
        let path = self.path(digest);
        if !path.exists() {
            return None;
        }
        // SAFETY: the file was written by `put` from a component this
        // engine configuration compiled; the directory is seedgate's own
        // (see the module docs). wasmtime checks the engine compatibility
        // header and refuses a mismatch.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "dropping an unusable cached plugin artifact");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Stores a compiled component; failures only cost a later recompile.
    pub fn put(&self, digest: &str, component: &Component) {
        let path = self.path(digest);
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let result = component
            .serialize()
            .map_err(|e| e.to_string())
            .and_then(|bytes| std::fs::write(&tmp, bytes).map_err(|e| e.to_string()))
            .and_then(|()| std::fs::rename(&tmp, &path).map_err(|e| e.to_string()));
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            tracing::warn!(path = %path.display(), error = %e, "could not cache a compiled plugin");
        }
    }
}
