//! glance-api: the OpenStack Image API v2 subset that python-glanceclient and openstacksdk
//! use, with the transparent local image cache and its management API.

pub mod access;
pub mod cache_api;
pub mod connection;
pub mod data;
pub mod discovery;
pub mod error;
pub mod fill;
pub mod image_actions;
pub mod image_list;
pub mod image_locations;
pub mod images;
pub mod import;
pub mod import_settings;
pub mod location_api;
pub mod members;
pub mod metadef_schemas;
pub mod metadefs;
pub mod request_id;
pub mod sendfile;
pub mod server;
pub mod settings;
pub mod state;
pub mod tasks;
pub mod upkeep;
