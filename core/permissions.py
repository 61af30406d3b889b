"""The API's one permission check and its pagination (kept apart from core.api, which imports
DRF's views: DRF reads these classes from settings while its views module loads)."""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions
from rest_framework.pagination import PageNumberPagination
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from core.actors import Credential

PUBLIC = "public"  # `required` value for a method that needs no credential (sign-in)


class RequiredPermission(BasePermission):
    """The view's `required[method]` must be in the credential's permissions.

    A view without `required` is closed (this class is the project's default permission class),
    and a method missing from it is a 405 before anything else happens.
    """

    message = "You do not have permission to do this."
    code = "permission_denied"

    def has_permission(self, request: Request, view: Any) -> bool:
        required = getattr(view, "required", None)
        if not isinstance(required, dict) or not required:
            return False
        method = "GET" if request.method == "HEAD" else request.method
        if method not in required:
            raise exceptions.MethodNotAllowed(request.method)
        needed = required[method]
        if needed == PUBLIC:
            return True
        credential = request.auth
        if not isinstance(credential, Credential):
            return False
        # The organization the host routed to (tenants.middleware); a credential is valid in one.
        tenant = getattr(request, "tenant", None)
        if tenant is None or credential.tenant.pk != tenant.pk:
            return False
        if needed in credential.permissions:
            return True
        self.message = f"This needs the “{needed}” permission."
        return False


class Pagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200
