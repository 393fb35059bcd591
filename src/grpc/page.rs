//! `DescribeImagesResponse`, written by hand.
//!
//! A page of `DescribeImages` is the largest reply on the hot path. Built
//! the generated way, every image becomes an `Image` message with seven
//! freshly allocated strings, which is then encoded and dropped. This type
//! lets the server encode the page straight from the state's images into one
//! buffer instead (see [`DescribeImagesResponse::from_page`]); the bytes on
//! the wire are the same, which the tests check against the generated
//! `Image` encoding.
//!
//! Clients decode it as usual: `images` and `total_count` are filled from
//! the wire like any generated message.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::encoding::{self, DecodeContext, WireType};
use prost::DecodeError;

use super::convert::{image_ref, image_type_value, license_value, source_value, timestamp};
use super::pb;
use super::state_message;
use crate::domain::{Image, ImageAttributes};
use crate::projection::ImagePage;

const IMAGES: u32 = 1;
const TOTAL_COUNT: u32 = 2;

/// The reply of `DescribeImages` (`imageledger.v1.DescribeImagesResponse`).
#[derive(Clone, PartialEq, Default, Debug)]
pub struct DescribeImagesResponse {
    /// The images of the page. Filled when a reply is decoded; a reply built
    /// by [`Self::from_page`] carries its images already encoded instead.
    pub images: Vec<pb::Image>,
    /// How many images match in all.
    pub total_count: u32,
    /// Field 1 entries encoded from the state (server side only).
    encoded_images: Bytes,
}

impl DescribeImagesResponse {
    /// The reply for `page`, its images encoded straight from the state.
    pub fn from_page(page: &ImagePage<'_>) -> Self {
        touch(page);
        let mut out = BytesMut::with_capacity(page.images.len() * 192);
        let mut body = BytesMut::with_capacity(256);
        for listed in &page.images {
            body.clear();
            encode_image_fields(listed.image, listed.shared, &mut body);
            encoding::encode_key(IMAGES, WireType::LengthDelimited, &mut out);
            encoding::encode_varint(body.len() as u64, &mut out);
            out.put_slice(&body);
        }
        Self {
            images: Vec::new(),
            total_count: page.total_count,
            encoded_images: out.freeze(),
        }
    }
}

/// Reads, level by level, the memory that encoding `page` will read.
///
/// A page's images lie scattered over the heap, each behind a chain of
/// pointers (the image, its attributes, their texts), so encoding them one
/// after another waits on one cache miss at a time. Reading one level for
/// every image before the next issues the page's misses together, where
/// they overlap; encoding then finds its data in the cache.
fn touch(page: &ImagePage<'_>) {
    let mut sum = 0usize;
    for listed in &page.images {
        let image = listed.image;
        sum = sum
            .wrapping_add(image.owner_account_id.as_str().len())
            .wrapping_add(image.region.as_str().len())
            .wrapping_add(image.state as usize)
            .wrapping_add(usize::from(image.copied_from.is_some()))
            .wrapping_add(image.created_time.nanosecond() as usize);
    }
    for listed in &page.images {
        for text in texts(&listed.image.attributes) {
            sum = sum.wrapping_add(text.len());
        }
    }
    for listed in &page.images {
        for text in texts(&listed.image.attributes) {
            sum = sum.wrapping_add(usize::from(text.as_bytes().first().copied().unwrap_or(0)));
        }
    }
    std::hint::black_box(sum);
}

/// The texts of `a` that a page carries.
fn texts(a: &ImageAttributes) -> [&str; 4] {
    [&a.image_name, &a.image_description, &a.platform, &a.os_name]
}

/// The fields of the `Image` message for `image`, in field order, with
/// proto3's rule that default values are not written.
fn encode_image_fields(image: &Image, shared: bool, buf: &mut BytesMut) {
    let a = &image.attributes;
    put_str(1, &image.image_id.text(), buf);
    put_str(2, image.owner_account_id.as_str(), buf);
    put_str(3, image.region.as_str(), buf);
    put_str(4, &a.image_name, buf);
    put_str(5, &a.image_description, buf);
    put_str(6, &a.platform, buf);
    put_str(7, &a.os_name, buf);
    put_enum(8, image_type_value(shared), buf);
    put_enum(9, state_message(image.state) as i32, buf);
    put_enum(10, source_value(a.image_source), buf);
    put_enum(11, license_value(a.license_type), buf);
    put_bool(12, a.encrypted, buf);
    put_bool(13, a.whole_instance, buf);
    put_bool(14, a.supports_cloudinit, buf);
    encoding::message::encode(15, &timestamp(image.created_time), buf);
    if let Some(source) = &image.copied_from {
        encoding::message::encode(16, &image_ref(source), buf);
    }
    put_bool(17, image.disabled, buf);
    put_bool(18, image.deprecated, buf);
    let protection = image.deletion_protection;
    put_bool(19, protection.enabled, buf);
    if let Some(after) = protection.delete_allowed_after {
        encoding::message::encode(20, &timestamp(after), buf);
    }
}

fn put_str(tag: u32, value: &str, buf: &mut BytesMut) {
    if !value.is_empty() {
        encoding::encode_key(tag, WireType::LengthDelimited, buf);
        encoding::encode_varint(value.len() as u64, buf);
        buf.put_slice(value.as_bytes());
    }
}

fn put_enum(tag: u32, value: i32, buf: &mut BytesMut) {
    if value != 0 {
        encoding::int32::encode(tag, &value, buf);
    }
}

fn put_bool(tag: u32, value: bool, buf: &mut BytesMut) {
    if value {
        encoding::bool::encode(tag, &value, buf);
    }
}

impl prost::Message for DescribeImagesResponse {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.encoded_images);
        for image in &self.images {
            encoding::message::encode(IMAGES, image, buf);
        }
        if self.total_count != 0 {
            encoding::uint32::encode(TOTAL_COUNT, &self.total_count, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            IMAGES => encoding::message::merge_repeated(wire_type, &mut self.images, buf, ctx)
                .map_err(|mut error| {
                    error.push("DescribeImagesResponse", "images");
                    error
                }),
            TOTAL_COUNT => encoding::uint32::merge(wire_type, &mut self.total_count, buf, ctx)
                .map_err(|mut error| {
                    error.push("DescribeImagesResponse", "total_count");
                    error
                }),
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        self.encoded_images.len()
            + encoding::message::encoded_len_repeated(IMAGES, &self.images)
            + if self.total_count != 0 {
                encoding::uint32::encoded_len(TOTAL_COUNT, &self.total_count)
            } else {
                0
            }
    }

    fn clear(&mut self) {
        self.images.clear();
        self.total_count = 0;
        self.encoded_images = Bytes::new();
    }
}

#[cfg(test)]
mod tests;

impl crate::projection::EncodedPage for super::pb::DescribeImagesResponse {
    fn encoded_bytes(&self) -> u64 {
        prost::Message::encoded_len(self) as u64
    }
}
