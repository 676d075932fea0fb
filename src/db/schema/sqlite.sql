-- upstream Glance's schema at alembic revision 2024_1_contract01, as its migrations leave it
-- on SQLite (glance-manage db_sync of Glance 33.0.0). One statement per ";" at a line end.
CREATE TABLE image_properties (
	id INTEGER NOT NULL,
	image_id VARCHAR(36) NOT NULL,
	name VARCHAR(255) NOT NULL,
	value TEXT,
	created_at DATETIME NOT NULL,
	updated_at DATETIME,
	deleted_at DATETIME,
	deleted BOOLEAN NOT NULL,
	PRIMARY KEY (id),
	FOREIGN KEY(image_id) REFERENCES images (id),
	CONSTRAINT ix_image_properties_image_id_name UNIQUE (image_id, name),
	CHECK (deleted IN (0, 1))
);
CREATE TABLE image_locations (
	id INTEGER NOT NULL,
	image_id VARCHAR(36) NOT NULL,
	value TEXT NOT NULL,
	created_at DATETIME NOT NULL,
	updated_at DATETIME,
	deleted_at DATETIME,
	deleted BOOLEAN NOT NULL,
	meta_data TEXT,
	status VARCHAR(30) DEFAULT 'active' NOT NULL,
	PRIMARY KEY (id),
	FOREIGN KEY(image_id) REFERENCES images (id),
	CHECK (deleted IN (0, 1))
);
CREATE TABLE image_members (
	id INTEGER NOT NULL,
	image_id VARCHAR(36) NOT NULL,
	member VARCHAR(255) NOT NULL,
	can_share BOOLEAN NOT NULL,
	created_at DATETIME NOT NULL,
	updated_at DATETIME,
	deleted_at DATETIME,
	deleted BOOLEAN NOT NULL,
	status VARCHAR(20) DEFAULT 'pending' NOT NULL,
	PRIMARY KEY (id),
	FOREIGN KEY(image_id) REFERENCES images (id),
	CONSTRAINT image_members_image_id_member_deleted_at_key UNIQUE (image_id, member, deleted_at),
	CHECK (can_share IN (0, 1)),
	CHECK (deleted IN (0, 1))
);
CREATE TABLE image_tags (
	id INTEGER NOT NULL,
	image_id VARCHAR(36) NOT NULL,
	value VARCHAR(255) NOT NULL,
	created_at DATETIME NOT NULL,
	updated_at DATETIME,
	deleted_at DATETIME,
	deleted BOOLEAN NOT NULL,
	PRIMARY KEY (id),
	FOREIGN KEY(image_id) REFERENCES images (id),
	CHECK (deleted IN (0, 1))
);
CREATE TABLE tasks (
	id VARCHAR(36) NOT NULL,
	type VARCHAR(30) NOT NULL,
	status VARCHAR(30) NOT NULL,
	owner VARCHAR(255) NOT NULL,
	expires_at DATETIME,
	created_at DATETIME NOT NULL,
	updated_at DATETIME,
	deleted_at DATETIME,
	deleted BOOLEAN NOT NULL, image_id VARCHAR(36), request_id VARCHAR(64), user_id VARCHAR(64),
	PRIMARY KEY (id),
	CHECK (deleted IN (0, 1))
);
CREATE TABLE task_info (
	task_id VARCHAR(36) NOT NULL,
	input TEXT,
	result TEXT,
	message TEXT,
	PRIMARY KEY (task_id),
	FOREIGN KEY(task_id) REFERENCES tasks (id)
);
CREATE TABLE metadef_namespaces (
	id INTEGER NOT NULL,
	namespace VARCHAR(80) NOT NULL,
	display_name VARCHAR(80),
	description TEXT,
	visibility VARCHAR(32),
	protected BOOLEAN,
	owner VARCHAR(255) NOT NULL,
	created_at DATETIME NOT NULL,
	updated_at DATETIME,
	PRIMARY KEY (id),
	CONSTRAINT uq_metadef_namespaces_namespace UNIQUE (namespace),
	CHECK (protected IN (0, 1))
);
CREATE TABLE metadef_resource_types (
	id INTEGER NOT NULL,
	name VARCHAR(80) NOT NULL,
	protected BOOLEAN NOT NULL,
	created_at DATETIME NOT NULL,
	updated_at DATETIME,
	PRIMARY KEY (id),
	CONSTRAINT uq_metadef_resource_types_name UNIQUE (name),
	CHECK (protected IN (0, 1))
);
CREATE TABLE metadef_namespace_resource_types (
	resource_type_id INTEGER NOT NULL,
	namespace_id INTEGER NOT NULL,
	properties_target VARCHAR(80),
	prefix VARCHAR(80),
	created_at DATETIME NOT NULL,
	updated_at DATETIME,
	PRIMARY KEY (resource_type_id, namespace_id),
	FOREIGN KEY(namespace_id) REFERENCES metadef_namespaces (id),
	FOREIGN KEY(resource_type_id) REFERENCES metadef_resource_types (id)
);
CREATE TABLE metadef_objects (
	id INTEGER NOT NULL,
	namespace_id INTEGER NOT NULL,
	name VARCHAR(80) NOT NULL,
	description TEXT,
	required TEXT,
	json_schema TEXT NOT NULL,
	created_at DATETIME NOT NULL,
	updated_at DATETIME,
	PRIMARY KEY (id),
	FOREIGN KEY(namespace_id) REFERENCES metadef_namespaces (id),
	CONSTRAINT uq_metadef_objects_namespace_id_name UNIQUE (namespace_id, name)
);
CREATE TABLE metadef_properties (
	id INTEGER NOT NULL,
	namespace_id INTEGER NOT NULL,
	name VARCHAR(80) NOT NULL,
	json_schema TEXT NOT NULL,
	created_at DATETIME NOT NULL,
	updated_at DATETIME,
	PRIMARY KEY (id),
	FOREIGN KEY(namespace_id) REFERENCES metadef_namespaces (id),
	CONSTRAINT uq_metadef_properties_namespace_id_name UNIQUE (namespace_id, name)
);
CREATE TABLE metadef_tags (
	id INTEGER NOT NULL,
	namespace_id INTEGER NOT NULL,
	name VARCHAR(80) NOT NULL,
	created_at DATETIME NOT NULL,
	updated_at DATETIME,
	PRIMARY KEY (id),
	FOREIGN KEY(namespace_id) REFERENCES metadef_namespaces (id),
	CONSTRAINT uq_metadef_tags_namespace_id_name UNIQUE (namespace_id, name)
);
CREATE TABLE node_reference (
	node_reference_id INTEGER NOT NULL,
	node_reference_url VARCHAR(255) NOT NULL,
	PRIMARY KEY (node_reference_id),
	CONSTRAINT uq_node_reference_node_reference_url UNIQUE (node_reference_url)
);
CREATE TABLE cached_images (
	id INTEGER NOT NULL,
	image_id VARCHAR(36) NOT NULL,
	last_accessed DATETIME NOT NULL,
	last_modified DATETIME NOT NULL,
	size BIGINT NOT NULL,
	hits INTEGER NOT NULL,
	checksum VARCHAR(32),
	node_reference_id INTEGER NOT NULL,
	PRIMARY KEY (id),
	FOREIGN KEY(node_reference_id) REFERENCES node_reference (node_reference_id),
	CONSTRAINT ix_cached_images_image_id_node_reference_id UNIQUE (image_id, node_reference_id)
);
CREATE TABLE "images" (
	id VARCHAR(36) NOT NULL,
	name VARCHAR(255),
	size INTEGER,
	status VARCHAR(30) NOT NULL,
	created_at DATETIME NOT NULL,
	updated_at DATETIME,
	deleted_at DATETIME,
	deleted BOOLEAN NOT NULL,
	disk_format VARCHAR(20),
	container_format VARCHAR(20),
	checksum VARCHAR(32),
	owner VARCHAR(255),
	min_disk INTEGER NOT NULL,
	min_ram INTEGER NOT NULL,
	protected BOOLEAN DEFAULT 0 NOT NULL,
	virtual_size INTEGER,
	visibility VARCHAR(9) DEFAULT 'shared' NOT NULL,
	os_hidden BOOLEAN DEFAULT 0 NOT NULL,
	os_hash_algo VARCHAR(64),
	os_hash_value VARCHAR(128),
	PRIMARY KEY (id)
);
CREATE INDEX ix_image_properties_deleted ON image_properties (deleted);
CREATE INDEX ix_image_properties_image_id ON image_properties (image_id);
CREATE INDEX ix_image_locations_deleted ON image_locations (deleted);
CREATE INDEX ix_image_locations_image_id ON image_locations (image_id);
CREATE INDEX ix_image_members_deleted ON image_members (deleted);
CREATE INDEX ix_image_members_image_id ON image_members (image_id);
CREATE INDEX ix_image_members_image_id_member ON image_members (image_id, member);
CREATE INDEX ix_image_tags_image_id ON image_tags (image_id);
CREATE INDEX ix_image_tags_image_id_tag_value ON image_tags (image_id, value);
CREATE INDEX ix_tasks_deleted ON tasks (deleted);
CREATE INDEX ix_tasks_owner ON tasks (owner);
CREATE INDEX ix_tasks_status ON tasks (status);
CREATE INDEX ix_tasks_type ON tasks (type);
CREATE INDEX ix_tasks_updated_at ON tasks (updated_at);
CREATE INDEX ix_metadef_namespaces_owner ON metadef_namespaces (owner);
CREATE INDEX ix_metadef_ns_res_types_namespace_id ON metadef_namespace_resource_types (namespace_id);
CREATE INDEX ix_metadef_objects_name ON metadef_objects (name);
CREATE INDEX ix_metadef_properties_name ON metadef_properties (name);
CREATE INDEX ix_metadef_tags_name ON metadef_tags (name);
CREATE INDEX ix_tasks_image_id ON tasks (image_id);
CREATE INDEX visibility_image_idx ON images (visibility);
CREATE INDEX ix_images_deleted ON images (deleted);
CREATE INDEX updated_at_image_idx ON images (updated_at);
CREATE INDEX created_at_image_idx ON images (created_at);
CREATE INDEX owner_image_idx ON images (owner);
CREATE INDEX checksum_image_idx ON images (checksum);
CREATE INDEX os_hidden_image_idx ON images (os_hidden);
CREATE INDEX os_hash_value_image_idx ON images (os_hash_value);
