-- upstream Glance's schema at alembic revision 2024_1_contract01, as its migrations leave it
-- on PostgreSQL (glance-manage db_sync of Glance 33.0.0, read back with pg_dump --schema-only),
-- unqualified so that it lands in the connection's schema. One statement per ";" at a line end.
CREATE TYPE image_visibility AS ENUM (
    'private',
    'public',
    'shared',
    'community'
);
CREATE TABLE cached_images (
    id bigint NOT NULL,
    image_id character varying(36) NOT NULL,
    last_accessed timestamp without time zone NOT NULL,
    last_modified timestamp without time zone NOT NULL,
    size bigint NOT NULL,
    hits integer NOT NULL,
    checksum character varying(32),
    node_reference_id bigint NOT NULL
);
CREATE SEQUENCE cached_images_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;
ALTER SEQUENCE cached_images_id_seq OWNED BY cached_images.id;
CREATE TABLE image_locations (
    id integer NOT NULL,
    image_id character varying(36) NOT NULL,
    value text NOT NULL,
    created_at timestamp without time zone NOT NULL,
    updated_at timestamp without time zone,
    deleted_at timestamp without time zone,
    deleted boolean NOT NULL,
    meta_data text,
    status character varying(30) DEFAULT 'active'::character varying NOT NULL
);
CREATE SEQUENCE image_locations_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;
ALTER SEQUENCE image_locations_id_seq OWNED BY image_locations.id;
CREATE TABLE image_members (
    id integer NOT NULL,
    image_id character varying(36) NOT NULL,
    member character varying(255) NOT NULL,
    can_share boolean NOT NULL,
    created_at timestamp without time zone NOT NULL,
    updated_at timestamp without time zone,
    deleted_at timestamp without time zone,
    deleted boolean NOT NULL,
    status character varying(20) DEFAULT 'pending'::character varying NOT NULL
);
CREATE SEQUENCE image_members_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;
ALTER SEQUENCE image_members_id_seq OWNED BY image_members.id;
CREATE TABLE image_properties (
    id integer NOT NULL,
    image_id character varying(36) NOT NULL,
    name character varying(255) NOT NULL,
    value text,
    created_at timestamp without time zone NOT NULL,
    updated_at timestamp without time zone,
    deleted_at timestamp without time zone,
    deleted boolean NOT NULL
);
CREATE SEQUENCE image_properties_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;
ALTER SEQUENCE image_properties_id_seq OWNED BY image_properties.id;
CREATE TABLE image_tags (
    id integer NOT NULL,
    image_id character varying(36) NOT NULL,
    value character varying(255) NOT NULL,
    created_at timestamp without time zone NOT NULL,
    updated_at timestamp without time zone,
    deleted_at timestamp without time zone,
    deleted boolean NOT NULL
);
CREATE SEQUENCE image_tags_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;
ALTER SEQUENCE image_tags_id_seq OWNED BY image_tags.id;
CREATE TABLE images (
    id character varying(36) NOT NULL,
    name character varying(255),
    size bigint,
    status character varying(30) NOT NULL,
    created_at timestamp without time zone NOT NULL,
    updated_at timestamp without time zone,
    deleted_at timestamp without time zone,
    deleted boolean NOT NULL,
    disk_format character varying(20),
    container_format character varying(20),
    checksum character varying(32),
    owner character varying(255),
    min_disk integer NOT NULL,
    min_ram integer NOT NULL,
    protected boolean DEFAULT false NOT NULL,
    virtual_size bigint,
    visibility image_visibility DEFAULT 'shared'::image_visibility NOT NULL,
    os_hidden boolean DEFAULT false NOT NULL,
    os_hash_algo character varying(64),
    os_hash_value character varying(128)
);
CREATE TABLE metadef_namespace_resource_types (
    resource_type_id integer NOT NULL,
    namespace_id integer NOT NULL,
    properties_target character varying(80),
    prefix character varying(80),
    created_at timestamp without time zone NOT NULL,
    updated_at timestamp without time zone
);
CREATE TABLE metadef_namespaces (
    id integer NOT NULL,
    namespace character varying(80) NOT NULL,
    display_name character varying(80),
    description text,
    visibility character varying(32),
    protected boolean,
    owner character varying(255) NOT NULL,
    created_at timestamp without time zone NOT NULL,
    updated_at timestamp without time zone
);
CREATE SEQUENCE metadef_namespaces_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;
ALTER SEQUENCE metadef_namespaces_id_seq OWNED BY metadef_namespaces.id;
CREATE TABLE metadef_objects (
    id integer NOT NULL,
    namespace_id integer NOT NULL,
    name character varying(80) NOT NULL,
    description text,
    required text,
    json_schema text NOT NULL,
    created_at timestamp without time zone NOT NULL,
    updated_at timestamp without time zone
);
CREATE SEQUENCE metadef_objects_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;
ALTER SEQUENCE metadef_objects_id_seq OWNED BY metadef_objects.id;
CREATE TABLE metadef_properties (
    id integer NOT NULL,
    namespace_id integer NOT NULL,
    name character varying(80) NOT NULL,
    json_schema text NOT NULL,
    created_at timestamp without time zone NOT NULL,
    updated_at timestamp without time zone
);
CREATE SEQUENCE metadef_properties_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;
ALTER SEQUENCE metadef_properties_id_seq OWNED BY metadef_properties.id;
CREATE TABLE metadef_resource_types (
    id integer NOT NULL,
    name character varying(80) NOT NULL,
    protected boolean NOT NULL,
    created_at timestamp without time zone NOT NULL,
    updated_at timestamp without time zone
);
CREATE SEQUENCE metadef_resource_types_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;
ALTER SEQUENCE metadef_resource_types_id_seq OWNED BY metadef_resource_types.id;
CREATE TABLE metadef_tags (
    id integer NOT NULL,
    namespace_id integer NOT NULL,
    name character varying(80) NOT NULL,
    created_at timestamp without time zone NOT NULL,
    updated_at timestamp without time zone
);
CREATE SEQUENCE metadef_tags_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;
ALTER SEQUENCE metadef_tags_id_seq OWNED BY metadef_tags.id;
CREATE TABLE node_reference (
    node_reference_id bigint NOT NULL,
    node_reference_url character varying(255) NOT NULL
);
CREATE SEQUENCE node_reference_node_reference_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;
ALTER SEQUENCE node_reference_node_reference_id_seq OWNED BY node_reference.node_reference_id;
CREATE TABLE task_info (
    task_id character varying(36) NOT NULL,
    input text,
    result text,
    message text
);
CREATE TABLE tasks (
    id character varying(36) NOT NULL,
    type character varying(30) NOT NULL,
    status character varying(30) NOT NULL,
    owner character varying(255) NOT NULL,
    expires_at timestamp without time zone,
    created_at timestamp without time zone NOT NULL,
    updated_at timestamp without time zone,
    deleted_at timestamp without time zone,
    deleted boolean NOT NULL,
    image_id character varying(36),
    request_id character varying(64),
    user_id character varying(64)
);
ALTER TABLE ONLY cached_images ALTER COLUMN id SET DEFAULT nextval('cached_images_id_seq'::regclass);
ALTER TABLE ONLY image_locations ALTER COLUMN id SET DEFAULT nextval('image_locations_id_seq'::regclass);
ALTER TABLE ONLY image_members ALTER COLUMN id SET DEFAULT nextval('image_members_id_seq'::regclass);
ALTER TABLE ONLY image_properties ALTER COLUMN id SET DEFAULT nextval('image_properties_id_seq'::regclass);
ALTER TABLE ONLY image_tags ALTER COLUMN id SET DEFAULT nextval('image_tags_id_seq'::regclass);
ALTER TABLE ONLY metadef_namespaces ALTER COLUMN id SET DEFAULT nextval('metadef_namespaces_id_seq'::regclass);
ALTER TABLE ONLY metadef_objects ALTER COLUMN id SET DEFAULT nextval('metadef_objects_id_seq'::regclass);
ALTER TABLE ONLY metadef_properties ALTER COLUMN id SET DEFAULT nextval('metadef_properties_id_seq'::regclass);
ALTER TABLE ONLY metadef_resource_types ALTER COLUMN id SET DEFAULT nextval('metadef_resource_types_id_seq'::regclass);
ALTER TABLE ONLY metadef_tags ALTER COLUMN id SET DEFAULT nextval('metadef_tags_id_seq'::regclass);
ALTER TABLE ONLY node_reference ALTER COLUMN node_reference_id SET DEFAULT nextval('node_reference_node_reference_id_seq'::regclass);
ALTER TABLE ONLY cached_images
    ADD CONSTRAINT cached_images_pkey PRIMARY KEY (id);
ALTER TABLE ONLY image_locations
    ADD CONSTRAINT image_locations_pkey PRIMARY KEY (id);
ALTER TABLE ONLY image_members
    ADD CONSTRAINT image_members_image_id_member_deleted_at_key UNIQUE (image_id, member, deleted_at);
ALTER TABLE ONLY image_members
    ADD CONSTRAINT image_members_pkey PRIMARY KEY (id);
ALTER TABLE ONLY image_properties
    ADD CONSTRAINT image_properties_pkey PRIMARY KEY (id);
ALTER TABLE ONLY image_tags
    ADD CONSTRAINT image_tags_pkey PRIMARY KEY (id);
ALTER TABLE ONLY images
    ADD CONSTRAINT images_pkey PRIMARY KEY (id);
ALTER TABLE ONLY cached_images
    ADD CONSTRAINT ix_cached_images_image_id_node_reference_id UNIQUE (image_id, node_reference_id);
ALTER TABLE ONLY image_properties
    ADD CONSTRAINT ix_image_properties_image_id_name UNIQUE (image_id, name);
ALTER TABLE ONLY metadef_namespace_resource_types
    ADD CONSTRAINT metadef_namespace_resource_types_pkey PRIMARY KEY (resource_type_id, namespace_id);
ALTER TABLE ONLY metadef_namespaces
    ADD CONSTRAINT metadef_namespaces_pkey PRIMARY KEY (id);
ALTER TABLE ONLY metadef_objects
    ADD CONSTRAINT metadef_objects_pkey PRIMARY KEY (id);
ALTER TABLE ONLY metadef_properties
    ADD CONSTRAINT metadef_properties_pkey PRIMARY KEY (id);
ALTER TABLE ONLY metadef_resource_types
    ADD CONSTRAINT metadef_resource_types_pkey PRIMARY KEY (id);
ALTER TABLE ONLY metadef_tags
    ADD CONSTRAINT metadef_tags_pkey PRIMARY KEY (id);
ALTER TABLE ONLY node_reference
    ADD CONSTRAINT node_reference_pkey PRIMARY KEY (node_reference_id);
ALTER TABLE ONLY task_info
    ADD CONSTRAINT task_info_pkey PRIMARY KEY (task_id);
ALTER TABLE ONLY tasks
    ADD CONSTRAINT tasks_pkey PRIMARY KEY (id);
ALTER TABLE ONLY metadef_namespaces
    ADD CONSTRAINT uq_metadef_namespaces_namespace UNIQUE (namespace);
ALTER TABLE ONLY metadef_objects
    ADD CONSTRAINT uq_metadef_objects_namespace_id_name UNIQUE (namespace_id, name);
ALTER TABLE ONLY metadef_properties
    ADD CONSTRAINT uq_metadef_properties_namespace_id_name UNIQUE (namespace_id, name);
ALTER TABLE ONLY metadef_resource_types
    ADD CONSTRAINT uq_metadef_resource_types_name UNIQUE (name);
ALTER TABLE ONLY metadef_tags
    ADD CONSTRAINT uq_metadef_tags_namespace_id_name UNIQUE (namespace_id, name);
ALTER TABLE ONLY node_reference
    ADD CONSTRAINT uq_node_reference_node_reference_url UNIQUE (node_reference_url);
CREATE INDEX checksum_image_idx ON images USING btree (checksum);
CREATE INDEX created_at_image_idx ON images USING btree (created_at);
CREATE INDEX ix_image_locations_deleted ON image_locations USING btree (deleted);
CREATE INDEX ix_image_locations_image_id ON image_locations USING btree (image_id);
CREATE INDEX ix_image_members_deleted ON image_members USING btree (deleted);
CREATE INDEX ix_image_members_image_id ON image_members USING btree (image_id);
CREATE INDEX ix_image_members_image_id_member ON image_members USING btree (image_id, member);
CREATE INDEX ix_image_properties_deleted ON image_properties USING btree (deleted);
CREATE INDEX ix_image_properties_image_id ON image_properties USING btree (image_id);
CREATE INDEX ix_image_tags_image_id ON image_tags USING btree (image_id);
CREATE INDEX ix_image_tags_image_id_tag_value ON image_tags USING btree (image_id, value);
CREATE INDEX ix_images_deleted ON images USING btree (deleted);
CREATE INDEX ix_metadef_namespaces_owner ON metadef_namespaces USING btree (owner);
CREATE INDEX ix_metadef_ns_res_types_namespace_id ON metadef_namespace_resource_types USING btree (namespace_id);
CREATE INDEX ix_metadef_objects_name ON metadef_objects USING btree (name);
CREATE INDEX ix_metadef_properties_name ON metadef_properties USING btree (name);
CREATE INDEX ix_metadef_tags_name ON metadef_tags USING btree (name);
CREATE INDEX ix_tasks_deleted ON tasks USING btree (deleted);
CREATE INDEX ix_tasks_image_id ON tasks USING btree (image_id);
CREATE INDEX ix_tasks_owner ON tasks USING btree (owner);
CREATE INDEX ix_tasks_status ON tasks USING btree (status);
CREATE INDEX ix_tasks_type ON tasks USING btree (type);
CREATE INDEX ix_tasks_updated_at ON tasks USING btree (updated_at);
CREATE INDEX os_hash_value_image_idx ON images USING btree (os_hash_value);
CREATE INDEX os_hidden_image_idx ON images USING btree (os_hidden);
CREATE INDEX owner_image_idx ON images USING btree (owner);
CREATE INDEX updated_at_image_idx ON images USING btree (updated_at);
CREATE INDEX visibility_image_idx ON images USING btree (visibility);
ALTER TABLE ONLY cached_images
    ADD CONSTRAINT cached_images_node_reference_id_fkey FOREIGN KEY (node_reference_id) REFERENCES node_reference(node_reference_id);
ALTER TABLE ONLY image_locations
    ADD CONSTRAINT image_locations_image_id_fkey FOREIGN KEY (image_id) REFERENCES images(id);
ALTER TABLE ONLY image_members
    ADD CONSTRAINT image_members_image_id_fkey FOREIGN KEY (image_id) REFERENCES images(id);
ALTER TABLE ONLY image_properties
    ADD CONSTRAINT image_properties_image_id_fkey FOREIGN KEY (image_id) REFERENCES images(id);
ALTER TABLE ONLY image_tags
    ADD CONSTRAINT image_tags_image_id_fkey FOREIGN KEY (image_id) REFERENCES images(id);
ALTER TABLE ONLY metadef_namespace_resource_types
    ADD CONSTRAINT metadef_namespace_resource_types_namespace_id_fkey FOREIGN KEY (namespace_id) REFERENCES metadef_namespaces(id);
ALTER TABLE ONLY metadef_namespace_resource_types
    ADD CONSTRAINT metadef_namespace_resource_types_resource_type_id_fkey FOREIGN KEY (resource_type_id) REFERENCES metadef_resource_types(id);
ALTER TABLE ONLY metadef_objects
    ADD CONSTRAINT metadef_objects_namespace_id_fkey FOREIGN KEY (namespace_id) REFERENCES metadef_namespaces(id);
ALTER TABLE ONLY metadef_properties
    ADD CONSTRAINT metadef_properties_namespace_id_fkey FOREIGN KEY (namespace_id) REFERENCES metadef_namespaces(id);
ALTER TABLE ONLY metadef_tags
    ADD CONSTRAINT metadef_tags_namespace_id_fkey FOREIGN KEY (namespace_id) REFERENCES metadef_namespaces(id);
ALTER TABLE ONLY task_info
    ADD CONSTRAINT task_info_task_id_fkey FOREIGN KEY (task_id) REFERENCES tasks(id);
