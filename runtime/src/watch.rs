//! Watch mode (`up --watch`, like `spin watch`): when a file matching a
//! component's `build.watch` globs changes, rebuild that component with its
//! build command, compile it, and swap it in. Requests already running keep
//! the instance they started with; only new requests see the new code. A
//! failed build or compile leaves the old component serving.

use anyhow::{Context as _, Result};
use globset::{Glob, GlobSet, GlobSetBuilder};
use notify::{RecursiveMode, Watcher};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::Engine;
use wasmtime::component::Linker;

use crate::engine::{self, Capabilities, InstanceState, Limits, Shared};
use crate::manifest::App;
use crate::trigger_http::Components;

pub struct Context {
    pub engine: Engine,
    pub linker: Linker<InstanceState>,
    pub shared: Arc<Shared>,
    pub limits: Limits,
    pub caps: HashMap<String, Arc<Capabilities>>,
    pub components: Components,
}

struct Watched {
    id: String,
    base: PathBuf,
    globs: GlobSet,
}

pub fn spawn(app: Arc<App>, ctx: Context) -> Result<()> {
    let mut watched = Vec::new();
    for c in app.components.values() {
        let Some(build) = &c.build else { continue };
        if build.watch.is_empty() {
            continue;
        }
        let base = crate::build::workdir(&app, build)?;
        let mut set = GlobSetBuilder::new();
        for g in &build.watch {
            set.add(Glob::new(g).with_context(|| format!("component {:?}: bad watch glob {g:?}", c.id))?);
        }
        watched.push(Watched { id: c.id.clone(), base: base.canonicalize().unwrap_or(base), globs: set.build()? });
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<PathBuf>();
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(ev) = ev {
            for p in ev.paths {
                let _ = tx.send(p);
            }
        }
    })?;
    let root = app.root.canonicalize().unwrap_or_else(|_| app.root.clone());
    watcher.watch(&root, RecursiveMode::Recursive)?;
    tracing::info!("watching {} for changes", root.display());

    tokio::spawn(async move {
        let _watcher = watcher; // keep it alive as long as the task
        loop {
            let Some(first) = rx.recv().await else { return };
            let mut changed = vec![first];
            // Debounce: editors write several events per save.
            tokio::time::sleep(Duration::from_millis(300)).await;
            while let Ok(p) = rx.try_recv() {
                changed.push(p);
            }
            for w in &watched {
                if changed.iter().any(|p| matches(w, p)) {
                    let id = w.id.clone();
                    if let Err(e) = rebuild(&app, &ctx, &id).await {
                        tracing::error!(component = %id, "rebuild failed, still serving the previous build: {e:#}");
                    }
                }
            }
            // Our own build writes files; drop what it queued.
            while rx.try_recv().is_ok() {}
        }
    });
    Ok(())
}

fn matches(w: &Watched, path: &Path) -> bool {
    if path.components().any(|c| c.as_os_str() == "target") {
        return false;
    }
    path.strip_prefix(&w.base).is_ok_and(|rel| w.globs.is_match(rel))
}

async fn rebuild(app: &Arc<App>, ctx: &Context, id: &str) -> Result<()> {
    let component = &app.components[id];
    let (app2, id2) = (app.clone(), id.to_owned());
    tokio::task::spawn_blocking(move || crate::build::one(&app2, &app2.components[&id2])).await??;
    let wasm = tokio::fs::read(&component.source).await?;
    let handler = engine::prepare(&ctx.engine, &ctx.linker, &wasm, ctx.caps[id].clone(), ctx.shared.clone(), ctx.limits.clone())?;
    ctx.components.write().unwrap().insert(id.to_owned(), Arc::new(handler));
    tracing::info!(component = %id, "rebuilt and swapped in");
    Ok(())
}
