//! The scheduler a mount's strategy asks for, built from the files the user named.

use std::path::Path;

use vmt_formats::image::ImageId;
use vmt_formats::trace::Trace;
use vmt_model::profile::Bundle;
use vmt_model::scheduler::{first_access_units, Scheduler, SchedulerParams, Strategy};
use vmt_swarm::Torrent;

use crate::params::{RuntimeError, RuntimeParams};

/// The scheduler for `params.strategy`, planning in `unit`-byte units (the engine's blocks),
/// and the names of the bundle's profiles (none without a bundle).
pub(crate) fn scheduler(
    params: &RuntimeParams,
    torrent: &Torrent,
    unit: u32,
) -> Result<(Scheduler, Vec<String>), RuntimeError> {
    let sched_params = SchedulerParams::new(unit);
    let image_bytes = torrent.total_length();
    match params.strategy {
        Strategy::Full => Err(RuntimeError::Config(
            "strategy full downloads the whole image first: use `vmt-run fetch`, then run from the file".into(),
        )),
        Strategy::Profile | Strategy::Markov => {
            let path = params.bundle.as_ref().ok_or_else(|| {
                RuntimeError::Config(format!("strategy {} needs --bundle", params.strategy))
            })?;
            let bundle = Bundle::load(path)?;
            check_bundle(&bundle, path, torrent, &params.torrent)?;
            let mut sched = Scheduler::new(&bundle, params.strategy, sched_params)?;
            let names: Vec<String> = bundle.profiles.iter().map(|p| p.name.clone()).collect();
            if let Some(want) = &params.profile {
                let index = names
                    .iter()
                    .position(|n| n == want)
                    .or_else(|| want.parse::<usize>().ok().filter(|i| *i < names.len()))
                    .ok_or_else(|| {
                        RuntimeError::Config(format!(
                            "no profile {want:?} in the bundle (it has: {})",
                            names.join(", ")
                        ))
                    })?;
                sched.fix_profile(index)?;
            }
            Ok((sched, names))
        }
        Strategy::Oracle => {
            let path = params.oracle_trace.as_ref().ok_or_else(|| {
                RuntimeError::Config("strategy oracle needs --oracle-trace".into())
            })?;
            let trace = Trace::load(path)?;
            if trace.image.size != image_bytes {
                return Err(RuntimeError::Config(format!(
                    "{}: the trace's image is {} bytes, the torrent's {image_bytes}",
                    path.display(),
                    trace.image.size,
                )));
            }
            let order = first_access_units(&trace, unit);
            Ok((
                Scheduler::oracle(image_bytes, &order, sched_params)?,
                Vec::new(),
            ))
        }
        other => Ok((
            Scheduler::without_bundle(image_bytes, other, sched_params)?,
            Vec::new(),
        )),
    }
}

/// Checks `bundle` against what the torrent knows of its image.
fn check_bundle(
    bundle: &Bundle,
    bundle_path: &Path,
    torrent: &Torrent,
    torrent_path: &Path,
) -> Result<(), RuntimeError> {
    let size_ok = bundle.image.size == torrent.total_length();
    let sha_ok = torrent
        .image_sha256()
        .is_none_or(|sha| bundle.image.is_size_only() || sha == bundle.image.sha256);
    if size_ok && sha_ok {
        return Ok(());
    }
    let torrent_id = match torrent.image_sha256() {
        Some(sha) => ImageId {
            size: torrent.total_length(),
            sha256: sha,
        }
        .to_string(),
        None => format!("{} bytes", torrent.total_length()),
    };
    Err(RuntimeError::WrongImage {
        bundle_path: bundle_path.to_owned(),
        bundle: bundle.image,
        torrent_path: torrent_path.to_owned(),
        torrent: torrent_id,
    })
}
