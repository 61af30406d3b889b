"""The API's one permission check and its pagination (kept apart from core.api, which imports
DRF's views: DRF reads these classes from settings while its views module loads)."""

from __future__ import annotations

from typing import Any

from django.core.paginator import EmptyPage, PageNotAnInteger
from django.core.paginator import Paginator as DjangoPaginator
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


class CountOnDemandPaginator(DjangoPaginator):
    """Django's paginator, except that a page is read before anything is counted.

    It reads one row more than the page: a page that is not followed by another (every list
    that fits on one page, the common case) gives the count without a COUNT query. Only a page
    with more after it counts, and then the queryset's count, from which Django strips the
    annotations no filter uses (an agent's instance counts, say).
    """

    def validate_number(self, number: Any) -> int:
        try:
            if isinstance(number, float) and not number.is_integer():
                raise ValueError
            number = int(number)
        except (TypeError, ValueError) as error:
            raise PageNotAnInteger("That page number is not an integer") from error
        if number < 1:
            raise EmptyPage("That page number is less than 1")
        if "count" in self.__dict__ and number > self.num_pages and number != 1:
            raise EmptyPage("That page contains no results")
        return number

    def page(self, number: Any):
        number = self.validate_number(number)
        bottom = (number - 1) * self.per_page
        rows = list(self.object_list[bottom : bottom + self.per_page + 1])
        if len(rows) <= self.per_page:
            if not rows and number > 1:
                raise EmptyPage("That page contains no results")
            self.__dict__["count"] = bottom + len(rows)  # the last page: counted as read
        return self._get_page(rows[: self.per_page], number, self)


class Pagination(PageNumberPagination):
    """Pages of 50 (`page_size` up to 200). `page` and `page_size` are whole numbers in their
    ranges or a 400: DRF's own would clamp a `page_size` of 0 or 9999 silently, and the OpenAPI
    document (core.api.ApiSchema) states these ranges."""

    django_paginator_class = CountOnDemandPaginator
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200
    max_page = 1_000_000

    def get_page_size(self, request: Request) -> int:
        return _whole_number(
            request, self.page_size_query_param, self.max_page_size, self.page_size
        )

    def get_page_number(self, request: Request, paginator: Any) -> int:
        return _whole_number(request, self.page_query_param, self.max_page, 1)


def _whole_number(request: Request, name: str, maximum: int, default: int) -> int:
    given = request.query_params.getlist(name)
    if not given:
        return default
    raw = given[0]
    if len(given) > 1 or not (
        raw.isascii() and raw.isdigit() and len(raw) <= 9 and 1 <= int(raw) <= maximum
    ):
        raise exceptions.ValidationError({name: [f"A whole number from 1 to {maximum:,}."]})
    return int(raw)
