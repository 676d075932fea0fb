//! Prints the Glance CustomResourceDefinition as YAML; `crds/glance.yaml` is its output.
use glance_operator::crd::Glance;
use kube::CustomResourceExt;

fn main() -> Result<(), serde_yaml::Error> {
    print!("{}", serde_yaml::to_string(&Glance::crd())?);
    Ok(())
}
