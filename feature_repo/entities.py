"""Entities: the two keys every feature of mmrec hangs off.

Ids are strings at every boundary of mmrec (ARCHITECTURE.md §10), so both join keys are STRING,
whatever the source catalogue used (MovieLens' integer ids arrive as "1", "2", ...).
"""

from feast import Entity, ValueType

user = Entity(
    name="user",
    join_keys=["user_id"],
    value_type=ValueType.STRING,
    description="A user of the catalogue (data contract `user_id`).",
)

item = Entity(
    name="item",
    join_keys=["item_id"],
    value_type=ValueType.STRING,
    description="An item of the catalogue (data contract `item_id`).",
)
