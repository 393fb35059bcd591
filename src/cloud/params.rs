//! An action's parameters, read from the JSON body with the codes
//! Tencent's clients expect: a field the action does not take is
//! `UnknownParameter`, a required one left out `MissingParameter`, one of
//! the wrong JSON type `InvalidParameter`. A `null` is a field left out.

use serde_json::{Map, Value};

use super::envelope::ApiError;

/// The body's fields, checked against the names the action takes.
pub struct Params {
    fields: Map<String, Value>,
}

/// A `Filters` entry of `DescribeImages`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// `Name`.
    pub name: String,
    /// `Values`.
    pub values: Vec<String>,
}

impl Params {
    /// Parses `body`, refusing any field not in `takes`.
    pub fn parse(body: &[u8], action: &str, takes: &[&str]) -> Result<Self, ApiError> {
        let value: Value = if body.iter().all(u8::is_ascii_whitespace) {
            Value::Object(Map::new())
        } else {
            serde_json::from_slice(body).map_err(|err| {
                ApiError::new(
                    "InvalidParameter",
                    format!("the request body is not valid JSON: {err}"),
                )
            })?
        };
        let Value::Object(fields) = value else {
            return Err(ApiError::new(
                "InvalidParameter",
                "the request body must be a JSON object of the action's parameters",
            ));
        };
        if let Some(unknown) = fields.keys().find(|key| !takes.contains(&key.as_str())) {
            return Err(ApiError::new(
                "UnknownParameter",
                format!(
                    "the parameter `{unknown}` is not one {action} takes (it takes {})",
                    takes.join(", ")
                ),
            ));
        }
        Ok(Self { fields })
    }

    fn get(&self, name: &str) -> Option<&Value> {
        self.fields.get(name).filter(|value| !value.is_null())
    }

    /// A required string.
    pub fn string(&self, name: &str) -> Result<String, ApiError> {
        self.opt_string(name)?.ok_or_else(|| missing(name))
    }

    /// An optional string.
    pub fn opt_string(&self, name: &str) -> Result<Option<String>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(other) => Err(wrong_type(name, "a String", other)),
        }
    }

    /// A required list of strings.
    pub fn strings(&self, name: &str) -> Result<Vec<String>, ApiError> {
        self.opt_strings(name)?.ok_or_else(|| missing(name))
    }

    /// An optional list of strings.
    pub fn opt_strings(&self, name: &str) -> Result<Option<Vec<String>>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    Value::String(text) => Ok(text.clone()),
                    other => Err(wrong_type(name, "an Array of String", other)),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(other) => Err(wrong_type(name, "an Array of String", other)),
        }
    }

    /// A boolean, `default` when left out.
    pub fn boolean(&self, name: &str, default: bool) -> Result<bool, ApiError> {
        Ok(self.opt_boolean(name)?.unwrap_or(default))
    }

    /// A boolean, `None` when left out.
    pub fn opt_boolean(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(on)) => Ok(Some(*on)),
            Some(other) => Err(wrong_type(name, "a Boolean", other)),
        }
    }

    /// A non-negative integer, `default` when left out.
    pub fn integer(&self, name: &str, default: u64) -> Result<u64, ApiError> {
        match self.get(name) {
            None => Ok(default),
            Some(Value::Number(number)) => number.as_u64().ok_or_else(|| {
                wrong_type(
                    name,
                    "a non-negative Integer",
                    &Value::Number(number.clone()),
                )
            }),
            Some(other) => Err(wrong_type(name, "an Integer", other)),
        }
    }

    /// `Filters`: a list of `{"Name": String, "Values": [String]}`.
    pub fn opt_filters(&self) -> Result<Option<Vec<Filter>>, ApiError> {
        let name = "Filters";
        let shape = "an Array of {\"Name\": String, \"Values\": Array of String}";
        let Some(value) = self.get(name) else {
            return Ok(None);
        };
        let Value::Array(items) = value else {
            return Err(wrong_type(name, shape, value));
        };
        items
            .iter()
            .map(|item| {
                let Value::Object(entry) = item else {
                    return Err(wrong_type(name, shape, item));
                };
                let entry = Params {
                    fields: entry.clone(),
                };
                if let Some(unknown) = entry.fields.keys().find(|k| !["Name", "Values"].contains(&k.as_str())) {
                    return Err(ApiError::new(
                        "UnknownParameter",
                        format!("the parameter `{name}.{unknown}` is not one a filter takes (Name, Values)"),
                    ));
                }
                Ok(Filter {
                    name: entry.string("Name").map_err(|e| nested(name, e))?,
                    values: entry.strings("Values").map_err(|e| nested(name, e))?,
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }
}

fn missing(name: &str) -> ApiError {
    ApiError::new(
        "MissingParameter",
        format!("the request is missing the required parameter `{name}`"),
    )
}

fn nested(parent: &str, err: ApiError) -> ApiError {
    ApiError::new(err.code, format!("in `{parent}`: {}", err.message))
}

fn wrong_type(name: &str, wanted: &str, got: &Value) -> ApiError {
    let kind = match got {
        Value::Null => "null",
        Value::Bool(_) => "a Boolean",
        Value::Number(_) => "a Number",
        Value::String(_) => "a String",
        Value::Array(_) => "an Array",
        Value::Object(_) => "an Object",
    };
    ApiError::new(
        "InvalidParameter",
        format!("the parameter `{name}` must be {wanted}, not {kind}"),
    )
}
