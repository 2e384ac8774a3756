"""The web faces: the merchant's back office (`/console`), over the same
services as the API. Pages never reach the store: they call services, as
the API's views do (DESIGN.md, "Second wave")."""
