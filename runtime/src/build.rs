//! `spin build`: runs each component's build command in its work directory.

use anyhow::{Context, Result, bail};

use crate::manifest::{App, Component};

pub fn all(app: &App) -> Result<()> {
    for c in app.components.values() {
        one(app, c)?;
    }
    Ok(())
}

/// Where a component's build runs: the manifest's folder, or `workdir`
/// under it. An absolute `workdir` is refused, as `spin build` refuses it.
pub fn workdir(app: &App, build: &crate::manifest::Build) -> Result<std::path::PathBuf> {
    match &build.workdir {
        None => Ok(app.root.clone()),
        Some(w) if std::path::Path::new(w).has_root() => {
            bail!("The workdir specified in the application file must be relative.")
        }
        Some(w) => Ok(app.root.join(w)),
    }
}

pub fn one(app: &App, c: &Component) -> Result<()> {
    let Some(build) = &c.build else { return Ok(()) };
    let dir = workdir(app, build)?;
    eprintln!("Building component {} with `{}`", c.id, build.command);
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(&build.command)
        .current_dir(&dir)
        .status()
        .with_context(|| format!("failed to run the build command of {:?}", c.id))?;
    if !status.success() {
        bail!("build command of component {:?} failed ({status})", c.id);
    }
    Ok(())
}
