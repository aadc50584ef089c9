//! Schemas written as JSON where utoipa's attributes cannot spell them (a choice of formats).

/// `v` as a schema (utoipa reads it like its own); an empty schema if it is not one.
pub fn json_schema(
    v: serde_json::Value,
) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    serde_json::from_value(v).unwrap_or_else(|_| {
        utoipa::openapi::RefOr::T(utoipa::openapi::schema::Schema::Object(Default::default()))
    })
}
