//! glance-cache-manage: upstream's command line for a glance-api's image cache, spoken
//! over the cache API (`/v2/cache`).

use std::io::{BufRead, Write};

use clap::{Parser, Subcommand};
use k8s_openapi::jiff::Timestamp;
use thiserror::Error;

use super::client::{ApiClient, CacheListing, ClearTarget, ClientError};
use super::table::{Align, render};
use crate::cache::{ImageId, InvalidImageId};

/// Command line of glance-cache-manage.
#[derive(Debug, Parser)]
#[command(
    name = "glance-cache-manage",
    version,
    about = "Manage the image cache of a glance-api through its cache API"
)]
pub struct ManageArgs {
    /// Address of the glance-api.
    #[arg(long, global = true, default_value = "0.0.0.0")]
    pub host: String,
    /// Port of the glance-api.
    #[arg(short = 'p', long, global = true, default_value_t = 9292)]
    pub port: u16,
    /// Authentication token, sent as X-Auth-Token.
    #[arg(
        short = 'A',
        long = "os-auth-token",
        alias = "auth_token",
        global = true,
        env = "OS_AUTH_TOKEN"
    )]
    pub token: Option<String>,
    /// Do not ask for confirmation.
    #[arg(short = 'f', long, global = true)]
    pub force: bool,
    /// Say what was done.
    #[arg(short = 'v', long, global = true)]
    pub verbose: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: ManageCommand,
}

/// Upstream's subcommands.
#[derive(Debug, Subcommand)]
pub enum ManageCommand {
    /// List the cached images.
    ListCached,
    /// List the images queued for prefetching.
    ListQueued,
    /// Queue an image for prefetching.
    QueueImage {
        /// The image.
        image_id: String,
    },
    /// Delete an image from the cache.
    DeleteCachedImage {
        /// The image.
        image_id: String,
    },
    /// Delete every image from the cache.
    DeleteAllCachedImages,
    /// Remove an image from the prefetch queue.
    DeleteQueuedImage {
        /// The image.
        image_id: String,
    },
    /// Empty the prefetch queue.
    DeleteAllQueuedImages,
}

/// Why a command failed.
#[derive(Debug, Error)]
pub enum ManageError {
    /// The request failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The argument is not an image ID.
    #[error("{0}")]
    ImageId(#[from] InvalidImageId),
    /// The image is not where the command expects it.
    #[error("image {0} is not {1}")]
    NotThere(ImageId, &'static str),
    /// Writing the output failed.
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
}

/// `YYYY-MM-DDTHH:MM:SS[.ffffff]` in UTC, as Python's `utcfromtimestamp().isoformat()`.
pub fn iso_utc(epoch_seconds: f64) -> String {
    let micros = (epoch_seconds * 1e6).round() as i64;
    match Timestamp::from_microsecond(micros) {
        Ok(t) => {
            let fraction = micros.rem_euclid(1_000_000);
            let base = t.strftime("%Y-%m-%dT%H:%M:%S").to_string();
            if fraction == 0 {
                base
            } else {
                format!("{base}.{fraction:06}")
            }
        }
        Err(_) => epoch_seconds.to_string(),
    }
}

/// The list-cached table.
pub fn cached_table(listing: &CacheListing) -> String {
    let rows: Vec<Vec<String>> = listing
        .cached_images
        .iter()
        .map(|i| {
            vec![
                i.image_id.clone(),
                if i.last_accessed == 0.0 {
                    "N/A".to_owned()
                } else {
                    iso_utc(i.last_accessed)
                },
                iso_utc(i.last_modified),
                i.size.to_string(),
                i.hits.to_string(),
            ]
        })
        .collect();
    render(
        &[
            ("ID", Align::Center),
            ("Last Accessed (UTC)", Align::Center),
            ("Last Modified (UTC)", Align::Center),
            ("Size", Align::Right),
            ("Hits", Align::Right),
        ],
        &rows,
    )
}

/// The list-queued table.
pub fn queued_table(listing: &CacheListing) -> String {
    let rows: Vec<Vec<String>> = listing
        .queued_images
        .iter()
        .map(|id| vec![id.clone()])
        .collect();
    render(&[("ID", Align::Center)], &rows)
}

/// Asks `question` unless forced; true on y/yes.
fn confirm(
    args: &ManageArgs,
    question: &str,
    out: &mut impl Write,
    input: &mut impl BufRead,
) -> Result<bool, ManageError> {
    if args.force {
        return Ok(true);
    }
    write!(out, "{question} [y/N]: ")?;
    out.flush()?;
    let mut answer = String::new();
    input.read_line(&mut answer)?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

/// Runs one command, printing to `out` and reading confirmations from `input`.
pub fn run(
    args: &ManageArgs,
    out: &mut impl Write,
    input: &mut impl BufRead,
) -> Result<(), ManageError> {
    let client = ApiClient::new(
        &format!("http://{}:{}", args.host, args.port),
        args.token.clone(),
    );
    let verbose = |out: &mut dyn Write, message: String| -> Result<(), ManageError> {
        if args.verbose {
            writeln!(out, "{message}")?;
        }
        Ok(())
    };
    match &args.command {
        ManageCommand::ListCached => {
            let listing = client.list_cache()?;
            if listing.cached_images.is_empty() {
                writeln!(out, "No cached images.")?;
            } else {
                writeln!(
                    out,
                    "Found {} cached images...",
                    listing.cached_images.len()
                )?;
                writeln!(out, "{}", cached_table(&listing))?;
            }
        }
        ManageCommand::ListQueued => {
            let listing = client.list_cache()?;
            if listing.queued_images.is_empty() {
                writeln!(out, "No queued images.")?;
            } else {
                writeln!(
                    out,
                    "Found {} queued images...",
                    listing.queued_images.len()
                )?;
                writeln!(out, "{}", queued_table(&listing))?;
            }
        }
        ManageCommand::QueueImage { image_id } => {
            let id = ImageId::parse(image_id)?;
            if confirm(args, &format!("Queue image {id} for caching?"), out, input)? {
                client.queue(&id)?;
                verbose(out, format!("Queued image {id} for caching"))?;
            }
        }
        ManageCommand::DeleteCachedImage { image_id } => {
            let id = ImageId::parse(image_id)?;
            if confirm(args, &format!("Delete cached image {id}?"), out, input)? {
                let listing = client.list_cache()?;
                if !listing
                    .cached_images
                    .iter()
                    .any(|i| i.image_id == id.as_str())
                {
                    return Err(ManageError::NotThere(id, "cached"));
                }
                client.delete(&id)?;
                verbose(out, format!("Deleted cached image {id}"))?;
            }
        }
        ManageCommand::DeleteAllCachedImages => {
            if confirm(args, "Delete all cached images?", out, input)? {
                let count = client.list_cache()?.cached_images.len();
                client.clear(ClearTarget::Cache)?;
                verbose(out, format!("Deleted {count} cached images"))?;
            }
        }
        ManageCommand::DeleteQueuedImage { image_id } => {
            let id = ImageId::parse(image_id)?;
            if confirm(args, &format!("Delete queued image {id}?"), out, input)? {
                let listing = client.list_cache()?;
                if !listing.queued_images.iter().any(|q| q == id.as_str()) {
                    return Err(ManageError::NotThere(id, "queued"));
                }
                client.delete(&id)?;
                verbose(out, format!("Deleted queued image {id}"))?;
            }
        }
        ManageCommand::DeleteAllQueuedImages => {
            if confirm(args, "Delete all queued images?", out, input)? {
                let count = client.list_cache()?.queued_images.len();
                client.clear(ClearTarget::Queue)?;
                verbose(out, format!("Deleted {count} queued images"))?;
            }
        }
    }
    Ok(())
}
