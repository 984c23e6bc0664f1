"""Desired state: request files, profiles and the site's approved values, validated."""
