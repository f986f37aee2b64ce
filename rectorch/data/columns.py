"""One vocabulary for interaction-table column names, used by every reader and view."""

USER = "user_id"
ITEM = "item_id"
TIME = "timestamp"
RATING = "rating"
