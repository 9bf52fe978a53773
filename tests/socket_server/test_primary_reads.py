"""init reads from the primary: a notification written a moment ago is always there, even
though a read from a (deliberately delayed) secondary at that moment would miss it."""
from bson import ObjectId
from pymongo import AsyncMongoClient


async def test_init_sees_a_notification_written_a_moment_ago(hub, js, stack):
    user = hub.new_user()
    status, body = await hub.publish([user], "post.liked", actor={"id": "a", "name": "Kim"}, data={"post_title": "P"})
    assert status == 201
    note_id = body["notifications"][0]["id"]

    # What a secondary read would see at this moment: the delayed member has not applied it.
    async with AsyncMongoClient(stack.mongo.member_url(2), tz_aware=True) as secondary:
        hello = await secondary.admin.command("hello")
        assert hello["secondary"] and not hello.get("isWritablePrimary")
        seen = await secondary[hub.settings.mongo_db]["notifications"].find_one({"_id": ObjectId(note_id)})
    assert seen is None, "the delayed secondary already had it: this test would prove nothing"

    sock = await hub.connect(js, "s", user)
    init = await sock.wait_for("init")
    assert init["unread_count"] == 1 and [n["id"] for n in init["notifications"]] == [note_id]
