"""Deploying to AWS: the template completed from `chalice package`, the
package itself, and the deploy script (never imported by the app)."""
