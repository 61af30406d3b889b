"""People: an organization's users and roles (in its schema), staff (in `public`), invitations."""
