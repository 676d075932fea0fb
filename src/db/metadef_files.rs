//! `glance-manage db_load_metadefs`, `db_unload_metadefs` and `db_export_metadefs`:
//! metadata definitions between upstream's JSON files (one namespace a file, as the
//! glance package ships them under `etc/metadefs`) and the catalogue.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use super::metadefs::{Association, Child, Kind, Namespace};
use super::{Db, DbError, now};

/// How a load treats a namespace that is in the catalogue already (upstream's options).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LoadMode {
    /// `--merge`: add what the file has and the catalogue lacks (else such a namespace is
    /// skipped).
    pub merge: bool,
    /// `--prefer_new` (with `--merge`): the file's namespace fields and definitions win.
    pub prefer_new: bool,
    /// `--overwrite` (with `--merge`): the namespace is replaced by the file's.
    pub overwrite: bool,
}

/// One namespace file, read.
struct File {
    namespace: Namespace,
    associations: Vec<Association>,
    children: Vec<(Kind, Vec<Child>)>,
}

fn string(map: &Map<String, Value>, key: &str) -> Option<String> {
    map.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn child(
    name: &str,
    schema: Option<String>,
    description: Option<String>,
    required: Option<String>,
) -> Child {
    Child {
        name: name.to_owned(),
        schema,
        description,
        required,
        created_at: now(),
        updated_at: now(),
    }
}

fn read(path: &Path) -> Result<File, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let Value::Object(doc) =
        serde_json::from_str::<Value>(&text).map_err(|e| format!("{}: {e}", path.display()))?
    else {
        return Err(format!("{}: not a JSON object", path.display()));
    };
    let name =
        string(&doc, "namespace").ok_or_else(|| format!("{}: no \"namespace\"", path.display()))?;
    let namespace = Namespace {
        id: 0,
        namespace: name,
        display_name: string(&doc, "display_name"),
        description: string(&doc, "description"),
        visibility: string(&doc, "visibility").unwrap_or_else(|| "public".to_owned()),
        protected: doc
            .get("protected")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        owner: string(&doc, "owner").unwrap_or_else(|| "admin".to_owned()),
        created_at: now(),
        updated_at: now(),
    };
    let list = |key: &str| -> Vec<Map<String, Value>> {
        doc.get(key)
            .and_then(Value::as_array)
            .map(|l| l.iter().filter_map(|v| v.as_object().cloned()).collect())
            .unwrap_or_default()
    };
    let associations = list("resource_type_associations")
        .iter()
        .filter_map(|a| {
            Some(Association {
                name: string(a, "name")?,
                prefix: string(a, "prefix"),
                properties_target: string(a, "properties_target"),
                created_at: now(),
                updated_at: now(),
            })
        })
        .collect();
    let properties = doc
        .get("properties")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(name, def)| child(name, Some(def.to_string()), None, None))
                .collect()
        })
        .unwrap_or_default();
    let objects = list("objects")
        .iter()
        .filter_map(|o| {
            let properties = o.get("properties").cloned().unwrap_or_else(|| json!({}));
            Some(child(
                &string(o, "name")?,
                Some(properties.to_string()),
                string(o, "description"),
                o.get("required").map(Value::to_string),
            ))
        })
        .collect();
    let tags = list("tags")
        .iter()
        .filter_map(|t| Some(child(&string(t, "name")?, None, None, None)))
        .collect();
    Ok(File {
        namespace,
        associations,
        children: vec![
            (Kind::Property, properties),
            (Kind::Object, objects),
            (Kind::Tag, tags),
        ],
    })
}

/// The JSON files at `path`: the file itself, or the `.json` files of the directory.
fn files(path: &Path) -> Result<Vec<PathBuf>, String> {
    if path.is_file() {
        return Ok(vec![path.to_owned()]);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "json"))
        .collect();
    found.sort();
    if found.is_empty() {
        return Err(format!(
            "Json schema files not found in {}. Aborting.",
            path.display()
        ));
    }
    Ok(found)
}

/// Loads the namespace files at `path`; a line for each namespace, what became of it.
pub async fn load(db: &Db, path: &Path, mode: LoadMode) -> Result<Vec<String>, LoadError> {
    if !mode.merge && (mode.prefer_new || mode.overwrite) {
        return Err(LoadError::Usage(
            "To use --prefer_new or --overwrite you need to combine of these options with --merge option.".to_owned(),
        ));
    }
    if mode.prefer_new && mode.overwrite {
        return Err(LoadError::Usage(
            "Please provide no more than one option from this list: --prefer_new, --overwrite"
                .to_owned(),
        ));
    }
    let mut report = Vec::new();
    for file in files(path).map_err(LoadError::Usage)? {
        let file = match read(&file) {
            Ok(f) => f,
            Err(e) => {
                report.push(format!("Failed to parse json file {e}"));
                continue;
            }
        };
        let name = file.namespace.namespace.clone();
        let mut existing = db.namespace(&name).await?;
        if let Some(old) = &existing
            && mode.overwrite
        {
            db.delete_namespace(old.id).await?;
            existing = None;
        }
        let ns = match existing {
            None => {
                db.insert_namespace(&file.namespace).await?;
                report.push(format!("Loaded namespace {name}"));
                db.namespace(&name).await?
            }
            Some(_) if !mode.merge => {
                report.push(format!(
                    "Skipping namespace {name}. It already exists in the database."
                ));
                continue;
            }
            Some(mut old) => {
                if mode.prefer_new {
                    let id = old.id;
                    old = Namespace {
                        id,
                        ..file.namespace.clone()
                    };
                    db.update_namespace(&old).await?;
                }
                report.push(format!("Merged namespace {name}"));
                Some(old)
            }
        };
        let Some(ns) = ns else { continue };
        let associated = db.associations(ns.id).await?;
        for a in &file.associations {
            if !associated.iter().any(|x| x.name == a.name) {
                db.associate(ns.id, a).await?;
            }
        }
        for (kind, children) in &file.children {
            for c in children {
                match db.child(*kind, ns.id, &c.name).await? {
                    None => {
                        db.insert_children(*kind, ns.id, std::slice::from_ref(c))
                            .await?;
                    }
                    Some(_) if mode.prefer_new => {
                        db.update_child(*kind, ns.id, &c.name, c).await?;
                    }
                    Some(_) => {}
                }
            }
        }
    }
    Ok(report)
}

/// Removes every metadata definition.
pub async fn unload(db: &Db) -> Result<usize, DbError> {
    let namespaces = db.namespaces(None, None).await?;
    for ns in &namespaces {
        db.delete_namespace(ns.id).await?;
    }
    db.delete_resource_types().await?;
    Ok(namespaces.len())
}

/// Writes each namespace to `<dir>/<display name, letters and digits only>.json`, in
/// upstream's format; the files written.
pub async fn export(db: &Db, dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| LoadError::Usage(format!("{}: {e}", dir.display())))?;
    let mut written = Vec::new();
    for ns in db.namespaces(None, None).await? {
        let mut doc = json!({
            "namespace": ns.namespace,
            "display_name": ns.display_name,
            "description": ns.description,
            "visibility": ns.visibility,
            "protected": ns.protected,
            "owner": ns.owner,
        });
        let associations = db.associations(ns.id).await?;
        doc["resource_type_associations"] = Value::Array(
            associations
                .iter()
                .map(|a| json!({"name": a.name, "prefix": a.prefix, "properties_target": a.properties_target}))
                .collect(),
        );
        let parse = |t: &Option<String>| {
            t.as_deref()
                .and_then(|t| serde_json::from_str::<Value>(t).ok())
                .unwrap_or(Value::Null)
        };
        let properties: Map<String, Value> = db
            .children(Kind::Property, ns.id)
            .await?
            .iter()
            .map(|p| (p.name.clone(), parse(&p.schema)))
            .collect();
        doc["properties"] = Value::Object(properties);
        doc["objects"] = Value::Array(
            db.children(Kind::Object, ns.id)
                .await?
                .iter()
                .map(|o| {
                    json!({"name": o.name, "description": o.description, "required": parse(&o.required), "properties": parse(&o.schema)})
                })
                .collect(),
        );
        doc["tags"] = Value::Array(
            db.children(Kind::Tag, ns.id)
                .await?
                .iter()
                .map(|t| json!({"name": t.name}))
                .collect(),
        );
        let base: String = ns
            .display_name
            .as_deref()
            .unwrap_or(&ns.namespace)
            .chars()
            .filter(|c| c.is_alphanumeric())
            .collect();
        let file = dir.join(format!("{base}.json"));
        let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
        std::fs::write(&file, text)
            .map_err(|e| LoadError::Usage(format!("{}: {e}", file.display())))?;
        written.push(file);
    }
    Ok(written)
}

/// Why a load or export did not run.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Options or files that do not make a load.
    #[error("{0}")]
    Usage(String),
    /// The catalogue failed.
    #[error(transparent)]
    Db(#[from] DbError),
}
