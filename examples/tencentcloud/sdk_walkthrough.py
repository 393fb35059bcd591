#!/usr/bin/env python3
"""Every image-sharing action of the cloud API door, through Tencent's own
Python SDK (tencentcloud-sdk-python-cvm and -lighthouse), checked field by
field, and the refusals checked by their exact Code.

    sdk_walkthrough.py ENDPOINT OWNER_ID OWNER_KEY RECIPIENT_ID RECIPIENT_KEY \
        IMAGE_A IMAGE_B SPARE_ACCOUNTS_FILE

IMAGE_A and IMAGE_B are NORMAL images of the owner in ap-guangzhou (A with
cloud-init, so Lighthouse may use it); SPARE_ACCOUNTS_FILE lists 50 more
registered root accounts, one a line. `run.sh` sets all this up. Exits 1
at the first reply that is not what the README says.
"""

import re
import sys

from tencentcloud.common import credential
from tencentcloud.common.common_client import CommonClient
from tencentcloud.common.exception.tencent_cloud_sdk_exception import (
    TencentCloudSDKException,
)
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.cvm.v20170312 import cvm_client
from tencentcloud.cvm.v20170312 import models as cvm
from tencentcloud.lighthouse.v20200324 import lighthouse_client
from tencentcloud.lighthouse.v20200324 import models as lighthouse

GZ, SH = "ap-guangzhou", "ap-shanghai"
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")

(endpoint, owner_id, owner_key, recipient_id, recipient_key,
 image_a, image_b, spare_file) = sys.argv[1:9]
spares = [line.strip() for line in open(spare_file) if line.strip()]


def profile():
    return ClientProfile(httpProfile=HttpProfile(endpoint=endpoint, protocol="http"))


def cvm_for(key, region=GZ):
    return cvm_client.CvmClient(credential.Credential(*key), region, profile())


def lighthouse_for(key, region=GZ):
    return lighthouse_client.LighthouseClient(credential.Credential(*key), region, profile())


def request(model, **fields):
    req = model()
    for name, value in fields.items():
        setattr(req, name, value)
    return req


def ok(what):
    print(f"ok: {what}")


def check(what, condition, got=None):
    if not condition:
        sys.exit(f"sdk walkthrough: {what}: unexpected {got!r}")
    ok(what)


def refused(what, code, call):
    try:
        reply = call()
    except TencentCloudSDKException as err:
        if err.get_code() != code:
            sys.exit(f"sdk walkthrough: {what}: got {err.get_code()} ({err.get_message()}), wanted {code}")
        if not re.match(r"^[0-9a-f-]{36}$", err.get_request_id() or ""):
            sys.exit(f"sdk walkthrough: {what}: no RequestId in the error")
        ok(f"{what}: {code}")
        return
    sys.exit(f"sdk walkthrough: {what}: succeeded ({reply.to_json_string()}), wanted {code}")


owner_cred = tuple(owner_key.split(":", 1))
recipient_cred = tuple(recipient_key.split(":", 1))
owner = cvm_for(owner_cred)
recipient = cvm_for(recipient_cred)

# DescribeImages: the owner's images, in Tencent's Image shape.
reply = owner.DescribeImages(cvm.DescribeImagesRequest())
check("the owner lists its two images", reply.TotalCount == 2 and
      {i.ImageId for i in reply.ImageSet} == {image_a, image_b}, reply.to_json_string())
a = next(i for i in reply.ImageSet if i.ImageId == image_a)
check("an image has Tencent's fields and types",
      a.ImageType == "PRIVATE_IMAGE" and a.ImageState == "NORMAL" and a.ImageName == "web"
      and a.Platform == "CentOS" and a.OsName == "CentOS 7.9 64-bit"
      and TIME.match(a.CreatedTime) and a.ImageSize == 0 and a.IsSupportCloudinit is True
      and a.ImageSource == "CREATE_IMAGE" and a.LicenseType == "TencentCloud"
      and a.ImageCreator == owner_id and a.SnapshotSet == [] and a.Tags == []
      and a.ImageDeprecated is False, a._serialize() if hasattr(a, "_serialize") else vars(a))

reply = owner.DescribeImages(request(cvm.DescribeImagesRequest, Filters=[
    request(cvm.Filter, Name="image-name", Values=["we"]),
    request(cvm.Filter, Name="image-type", Values=["PRIVATE_IMAGE"])]))
check("filters image-name and image-type", reply.TotalCount == 1 and reply.ImageSet[0].ImageId == image_a,
      reply.to_json_string())
reply = owner.DescribeImages(request(cvm.DescribeImagesRequest, Filters=[
    request(cvm.Filter, Name="platform", Values=["Ubuntu"])]))
check("filter platform", reply.TotalCount == 1 and reply.ImageSet[0].ImageId == image_b, reply.to_json_string())
reply = owner.DescribeImages(request(cvm.DescribeImagesRequest, Offset=1, Limit=1))
check("paging by Offset and Limit", reply.TotalCount == 2 and len(reply.ImageSet) == 1, reply.to_json_string())
reply = owner.DescribeImages(request(cvm.DescribeImagesRequest, ImageIds=[image_b]))
check("ImageIds", [i.ImageId for i in reply.ImageSet] == [image_b], reply.to_json_string())
reply = owner.DescribeImages(request(cvm.DescribeImagesRequest, Filters=[
    request(cvm.Filter, Name="tag-key", Values=["team"])]))
check("no image carries tags", reply.TotalCount == 0 and reply.ImageSet == [], reply.to_json_string())
refused("ImageIds with Filters", "InvalidParameter.InvalidParameterCoexistImageIdsFilters",
        lambda: owner.DescribeImages(request(cvm.DescribeImagesRequest, ImageIds=[image_a],
                                             Filters=[request(cvm.Filter, Name="image-id", Values=[image_a])])))
refused("an unknown filter", "InvalidFilter", lambda: owner.DescribeImages(
    request(cvm.DescribeImagesRequest, Filters=[request(cvm.Filter, Name="zone", Values=["x"])])))

# Sharing.
owner.ModifyImageSharePermission(request(cvm.ModifyImageSharePermissionRequest,
                                         ImageId=image_a, AccountIds=[recipient_id], Permission="SHARE"))
ok("the owner shares image A")
reply = owner.DescribeImageSharePermission(request(cvm.DescribeImageSharePermissionRequest, ImageId=image_a))
check("the share list names the recipient",
      [(s.AccountId, bool(TIME.match(s.CreatedTime))) for s in reply.SharePermissionSet] == [(recipient_id, True)],
      reply.to_json_string())
reply = recipient.DescribeImages(request(cvm.DescribeImagesRequest, Filters=[
    request(cvm.Filter, Name="image-type", Values=["SHARED_IMAGE"])]))
check("the recipient lists it as shared",
      [(i.ImageId, i.ImageType, i.ImageCreator) for i in reply.ImageSet] == [(image_a, "SHARED_IMAGE", owner_id)],
      reply.to_json_string())

# What a recipient may not do, and what the owner may not do while shared.
refused("the recipient deletes it", "InvalidParameterValue.InvalidImageIdIsShared",
        lambda: recipient.DeleteImages(request(cvm.DeleteImagesRequest, ImageIds=[image_a])))
refused("the recipient re-shares it", "UnauthorizedOperation.ImageNotBelongToAccount",
        lambda: recipient.ModifyImageSharePermission(request(cvm.ModifyImageSharePermissionRequest,
                                                             ImageId=image_a, AccountIds=[spares[0]], Permission="SHARE")))
refused("the recipient renames it", "UnsupportedOperation.SharedImageModifyUnsupported",
        lambda: recipient.ModifyImageAttribute(request(cvm.ModifyImageAttributeRequest,
                                                       ImageId=image_a, ImageName="mine")))
refused("the recipient reads its share list", "UnauthorizedOperation.ImageNotBelongToAccount",
        lambda: recipient.DescribeImageSharePermission(request(cvm.DescribeImageSharePermissionRequest, ImageId=image_a)))
refused("the owner deletes it while shared", "InvalidImageId.InShared",
        lambda: owner.DeleteImages(request(cvm.DeleteImagesRequest, ImageIds=[image_a])))
refused("the recipient touches another image of the owner", "UnauthorizedOperation.ImageNotBelongToAccount",
        lambda: recipient.ModifyImageSharePermission(request(cvm.ModifyImageSharePermissionRequest,
                                                             ImageId=image_b, AccountIds=[spares[0]], Permission="SHARE")))
refused("a call in another region", "InvalidImageId.NotFound",
        lambda: cvm_for(owner_cred, SH).ModifyImageSharePermission(request(
            cvm.ModifyImageSharePermissionRequest, ImageId=image_a, AccountIds=[spares[0]], Permission="SHARE")))
refused("the owner shares with itself", "InvalidAccountIs.YourSelf",
        lambda: owner.ModifyImageSharePermission(request(cvm.ModifyImageSharePermissionRequest,
                                                         ImageId=image_a, AccountIds=[owner_id], Permission="SHARE")))
refused("a share made twice", "FailedOperation.AccountAlreadyExists",
        lambda: owner.ModifyImageSharePermission(request(cvm.ModifyImageSharePermissionRequest,
                                                         ImageId=image_a, AccountIds=[recipient_id], Permission="SHARE")))

# The 51st account.
owner.ModifyImageSharePermission(request(cvm.ModifyImageSharePermissionRequest,
                                         ImageId=image_a, AccountIds=spares[:49], Permission="SHARE"))
reply = owner.DescribeImageSharePermission(request(cvm.DescribeImageSharePermissionRequest, ImageId=image_a))
check("the image is shared with 50 accounts", len(reply.SharePermissionSet) == 50, len(reply.SharePermissionSet))
refused("the 51st account", "OverQuota",
        lambda: owner.ModifyImageSharePermission(request(cvm.ModifyImageSharePermissionRequest,
                                                         ImageId=image_a, AccountIds=[spares[49]], Permission="SHARE")))
owner.ModifyImageSharePermission(request(cvm.ModifyImageSharePermissionRequest,
                                         ImageId=image_a, AccountIds=spares[:49], Permission="CANCEL"))
ok("the owner cancels 49 shares")

# Copies: the owner's to another region, the recipient's into its own account.
reply = owner.SyncImages(request(cvm.SyncImagesRequest, ImageIds=[image_b], DestinationRegions=[SH],
                                 ImageName="api-copy", ImageSetRequired=True))
check("SyncImages gives the copy", len(reply.ImageSet) == 1 and reply.ImageSet[0].Region == SH
      and reply.ImageSet[0].ImageId.startswith("img-"), reply.to_json_string())
copy = reply.ImageSet[0].ImageId
reply = cvm_for(owner_cred, SH).DescribeImages(cvm.DescribeImagesRequest())
check("the copy is listed in its region",
      [(i.ImageId, i.ImageName) for i in reply.ImageSet] == [(copy, "api-copy")], reply.to_json_string())
refused("a dry run of a copy", "DryRunOperation",
        lambda: owner.SyncImages(request(cvm.SyncImagesRequest, ImageIds=[image_b],
                                         DestinationRegions=[SH], ImageName="api-copy-2", DryRun=True)))
refused("the owner copies into its own region", "InvalidParameterValue.InvalidRegion",
        lambda: owner.SyncImages(request(cvm.SyncImagesRequest, ImageIds=[image_b], DestinationRegions=[GZ])))
reply = recipient.SyncImages(request(cvm.SyncImagesRequest, ImageIds=[image_a], DestinationRegions=[GZ],
                                     ImageName="my-web", ImageSetRequired=True))
check("the recipient copies the shared image into its account", reply.ImageSet[0].Region == GZ,
      reply.to_json_string())

# Attributes and quota.
owner.ModifyImageAttribute(request(cvm.ModifyImageAttributeRequest, ImageId=image_b,
                                   ImageName="api-v2", ImageDescription="the API, second cut"))
reply = owner.DescribeImages(request(cvm.DescribeImagesRequest, ImageIds=[image_b]))
check("the rename shows", (reply.ImageSet[0].ImageName, reply.ImageSet[0].ImageDescription)
      == ("api-v2", "the API, second cut"), reply.to_json_string())
owner.ModifyImageAttribute(request(cvm.ModifyImageAttributeRequest, ImageId=image_b, ImageDeprecated=True))
reply = owner.DescribeImages(request(cvm.DescribeImagesRequest, ImageIds=[image_b]))
check("a deprecated image shows as such", reply.ImageSet[0].ImageDeprecated is True, reply.to_json_string())
refused("sharing a deprecated image", "UnsupportedOperation.ImageDeprecated",
        lambda: owner.ModifyImageSharePermission(request(cvm.ModifyImageSharePermissionRequest,
                                                         ImageId=image_b, AccountIds=[recipient_id], Permission="SHARE")))
owner.ModifyImageAttribute(request(cvm.ModifyImageAttributeRequest, ImageId=image_b, ImageDeprecated=False))
reply = owner.DescribeImages(request(cvm.DescribeImagesRequest, ImageIds=[image_b]))
check("and no longer once undeprecated", reply.ImageSet[0].ImageDeprecated is False, reply.to_json_string())
reply = owner.DescribeImageQuota(cvm.DescribeImageQuotaRequest())
check("the quota", reply.ImageNumQuota == 500, reply.to_json_string())

# Lighthouse.
lh = lighthouse_for(owner_cred)
reply = lh.ModifyImageSharePermission(request(lighthouse.ModifyImageSharePermissionRequest,
                                              ImageId=image_a, Permission="SHARE"))
check("Lighthouse gets a blueprint", reply.BlueprintId == "lhbp-" + image_a[4:], reply.to_json_string())
refused("shared with Lighthouse twice", "UnsupportedOperation.ImageAlreadyShared",
        lambda: lh.ModifyImageSharePermission(request(lighthouse.ModifyImageSharePermissionRequest,
                                                      ImageId=image_a, Permission="SHARE")))
reply = lh.ModifyImageSharePermission(request(lighthouse.ModifyImageSharePermissionRequest,
                                              ImageId=image_a, Permission="CANCEL"))
check("Lighthouse's share is cancelled", reply.BlueprintId is None, reply.to_json_string())

# Deleting: a dry run, then for real once every share is cancelled.
owner.ModifyImageSharePermission(request(cvm.ModifyImageSharePermissionRequest,
                                         ImageId=image_a, AccountIds=[recipient_id], Permission="CANCEL"))
ok("the owner cancels the last share")
refused("a dry run of the delete", "DryRunOperation",
        lambda: owner.DeleteImages(request(cvm.DeleteImagesRequest, ImageIds=[image_a], DryRun=True)))
owner.DeleteImages(request(cvm.DeleteImagesRequest, ImageIds=[image_a]))
reply = owner.DescribeImages(cvm.DescribeImagesRequest())
check("the deleted image is gone", [i.ImageId for i in reply.ImageSet] == [image_b], reply.to_json_string())

# A client that leaves the body out of the signature (X-TC-Content-SHA256:
# UNSIGNED-PAYLOAD), as the SDK can.
unsigned_profile = profile()
unsigned_profile.unsignedPayload = True
unsigned = cvm_client.CvmClient(credential.Credential(*owner_cred), GZ, unsigned_profile)
reply = unsigned.DescribeImageQuota(cvm.DescribeImageQuotaRequest())
check("an unsigned payload is accepted", reply.ImageNumQuota == 500, reply.to_json_string())

# The envelope's own refusals.
refused("a wrong SecretKey", "AuthFailure.SignatureFailure",
        lambda: cvm_for((owner_cred[0], "not-the-key")).DescribeImageQuota(cvm.DescribeImageQuotaRequest()))
refused("an unknown SecretId", "AuthFailure.SecretIdNotFound",
        lambda: cvm_for(("AKIDnobody", "x")).DescribeImageQuota(cvm.DescribeImageQuotaRequest()))
common = CommonClient("cvm", "2017-03-12", credential.Credential(*owner_cred), GZ, profile())
refused("an action not served", "InvalidAction", lambda: common.call_json("DescribeInstances", {}))
refused("an unknown parameter", "UnknownParameter",
        lambda: common.call_json("DescribeImageQuota", {"Zone": "ap-guangzhou-3"}))
refused("a wrong type", "InvalidParameter",
        lambda: common.call_json("DescribeImages", {"Limit": "20"}))
refused("a missing parameter", "MissingParameter",
        lambda: common.call_json("DeleteImages", {}))
old = CommonClient("cvm", "2016-01-01", credential.Credential(*owner_cred), GZ, profile())
refused("a version not served", "NoSuchVersion", lambda: old.call_json("DescribeImages", {}))
print("sdk walkthrough: every reply as the README says")
