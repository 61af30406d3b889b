"""Pages of the organization's host for people: login and its code step, password reset, members,
invitations, your profile and its two-factor authentication."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login, update_session_auth_hash
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.mail import send_mail
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse, reverse_lazy
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts import second_step, selectors, services, two_factor
from accounts.forms import (
    InvitationAcceptForm,
    InvitationForm,
    LoginForm,
    PasswordChangeForm,
    ProfileForm,
    RoleChangeForm,
    SignInCodeForm,
    TwoFactorConfirmForm,
    TwoFactorProofForm,
)
from accounts.handoff import HandoffRefused, handoff_token_redeem
from accounts.middleware import two_factor_required
from accounts.models import Invitation, User
from audit import failures as audit_failures
from audit import services as audit_services
from core.actors import Actor
from core.pages import require, requires
from core.roles import ORGANIZATION_SECURITY, Role

logger = logging.getLogger(__name__)

MODEL_BACKEND = "django.contrib.auth.backends.ModelBackend"
INVITATION_SESSION_KEY = "accounts.invitation_token"
INVITATION_LINK_SESSION_KEY = "accounts.invitation_link"
MAX_TOKEN_LENGTH = 200


def _absolute(request: HttpRequest, path: str) -> str:
    """A link on this organization's canonical host (never the request's Host header)."""
    return request.tenant.url.rstrip("/") + path


# --- Login, logout, handoff -------------------------------------------------------------------


class LoginView(auth_views.LoginView):
    """Email and password; then, for an account with two-factor authentication, the code step
    (`login_code`), before which the session is not signed in."""

    template_name = "accounts/login.html"
    authentication_form = LoginForm
    redirect_authenticated_user = True
    code_url_name = "accounts:login-code"

    def form_valid(self, form: LoginForm) -> HttpResponse:
        user = form.get_user()
        if user.two_factor_enabled:
            second_step.start(self.request, user, next_url=self.get_success_url())
            return redirect(self.code_url_name)
        response = super().form_valid(form)
        audit_services.login_record(
            actor=Actor.for_user(user, self.request), email=user.email, succeeded=True
        )
        return response

    def form_invalid(self, form: LoginForm) -> HttpResponse:
        # Only a real attempt (credentials checked and refused), not a malformed form.
        refusals = {error.code for error in form.errors.as_data().get("__all__", [])}
        if refusals & {"invalid_login", "inactive"} and form.cleaned_data.get("username"):
            audit_failures.login_failure_record(
                actor=Actor.anonymous(self.request), email=form.cleaned_data["username"]
            )
        return super().form_invalid(form)


@dataclass(frozen=True)
class TwoFactorSite:
    """Where one site's two-factor pages are: the portal's (an organization's people) or Django
    admin's (platform staff). The views are the same; the templates and addresses differ."""

    login_url: str
    account_url: str  # where the state is shown, with the forms to turn it off or renew codes
    codes_url: str
    login_code_template: str
    setup_template: str
    codes_template: str
    context: Callable[[HttpRequest], dict] = lambda request: {}


PORTAL_TWO_FACTOR = TwoFactorSite(
    login_url="accounts:login",
    account_url="accounts:profile",
    codes_url="accounts:two-factor-codes",
    login_code_template="accounts/login_code.html",
    setup_template="accounts/two_factor_setup.html",
    codes_template="accounts/two_factor_codes.html",
)


@never_cache
@require_http_methods(["GET", "POST"])
def login_code(request: HttpRequest, site: TwoFactorSite = PORTAL_TWO_FACTOR) -> HttpResponse:
    """The second step of a sign-in: the code from the person's app, or a recovery code."""
    pending = second_step.read(request)
    if pending is None:
        second_step.clear(request)
        messages.info(request, "Sign in with your email and password first.")
        return redirect(site.login_url)
    form = SignInCodeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = pending.user
        try:
            method = services.two_factor_code_check(
                actor=Actor.for_user(user, request), user_id=user.pk, code=form.cleaned_data["code"]
            )
        except ValidationError as error:
            audit_failures.login_failure_record(
                actor=Actor.anonymous(request), email=user.email, method="two_factor"
            )
            if second_step.count_failure(request) >= settings.TWO_FACTOR_MAX_ATTEMPTS:
                second_step.clear(request)
                messages.error(request, "Too many wrong codes. Sign in again.")
                return redirect(site.login_url)
            _apply_errors(form, error)
        else:
            second_step.clear(request)
            login(request, user, backend=MODEL_BACKEND)
            audit_services.login_record(
                actor=Actor.for_user(user, request),
                email=user.email,
                succeeded=True,
                method=f"password+{method}",
            )
            if method == "recovery_code":
                remaining = selectors.recovery_codes_remaining(user_id=user.pk)
                messages.warning(
                    request,
                    f"You signed in with a recovery code: {remaining} left. Make new ones on "
                    "your account page if you are running out.",
                )
            return redirect(pending.next_url or settings.LOGIN_REDIRECT_URL)
    context = {"form": form, "email": pending.user.email, **site.context(request)}
    return render(request, site.login_code_template, context, status=400 if form.errors else 200)


class LogoutView(auth_views.LogoutView):
    def post(self, request: HttpRequest, *args, **kwargs) -> HttpResponse:
        response = super().post(request, *args, **kwargs)
        messages.info(request, "You are signed out.")
        return response


# CSRF protection cannot apply here: the form is posted from the public host's signup page, and
# the browser holds no CSRF cookie for this host yet (nor would the Origin match). The signed,
# single-use, 60-second token bound to this organization is what authenticates the request. The
# most a forged cross-site post can do is sign a browser into an organization the forger just
# created, on that organization's own host (cookies are host-only): no other session is touched.
@csrf_exempt
@require_POST
@never_cache
def login_handoff(request: HttpRequest) -> HttpResponse:
    """Sign the new owner in after signup, from the token the public host handed over."""
    try:
        user_id = handoff_token_redeem(tenant=request.tenant, token=request.POST.get("token", ""))
        user = selectors.member_get_active(user_id=user_id)
        if user is None:
            raise HandoffRefused("no such active user")
    except HandoffRefused as refusal:
        logger.info("sign-in handoff refused on %s: %s", request.tenant.slug, refusal)
        return render(request, "accounts/handoff_refused.html", status=400)
    login(request, user, backend=MODEL_BACKEND)
    audit_services.login_record(
        actor=Actor.for_user(user, request), email=user.email, succeeded=True, method="handoff"
    )
    messages.success(request, f"Welcome to {request.tenant.name}. Your organization is ready.")
    return redirect("portal:dashboard")


# --- Password reset ---------------------------------------------------------------------------


class PasswordResetView(auth_views.PasswordResetView):
    template_name = "accounts/password_reset_form.html"
    email_template_name = "accounts/email/password_reset.txt"
    subject_template_name = "accounts/email/password_reset_subject.txt"
    success_url = reverse_lazy("accounts:password-reset-done")

    def form_valid(self, form):
        # The link points at this organization's canonical URL, not at whatever Host was sent.
        self.extra_email_context = {
            "organization_name": self.request.tenant.name,
            "base_url": self.request.tenant.url.rstrip("/"),
        }
        return super().form_valid(form)


class PasswordResetDoneView(auth_views.PasswordResetDoneView):
    template_name = "accounts/password_reset_done.html"


class PasswordResetConfirmView(auth_views.PasswordResetConfirmView):
    template_name = "accounts/password_reset_confirm.html"
    success_url = reverse_lazy("accounts:password-reset-complete")


class PasswordResetCompleteView(auth_views.PasswordResetCompleteView):
    template_name = "accounts/password_reset_complete.html"


# --- Members ----------------------------------------------------------------------------------


def _members_page(
    request: HttpRequest, invite_form: InvitationForm | None = None, status: int = 200
) -> HttpResponse:
    actor = Actor.from_request(request)
    assignable = services.roles_assignable_by(actor=actor)
    can_invite = actor.can("members:invite")
    rows = [
        {
            "user": member,
            "is_self": member.pk == request.user.pk,
            "is_manageable": services.member_is_manageable_by(actor=actor, user=member),
        }
        for member in selectors.member_list()
    ]
    context = {
        "rows": rows,
        "assignable_roles": [(role, Role(role).label) for role in assignable],
        "can_invite": can_invite,
        "invite_form": invite_form if invite_form is not None else InvitationForm(roles=assignable),
        "invitations": list(selectors.invitation_list_pending()) if can_invite else [],
        "can_require_two_factor": actor.can(ORGANIZATION_SECURITY),
        "members_without_two_factor": sum(
            row["user"].is_active and not row["user"].two_factor_enabled for row in rows
        ),
        # The link of the invitation just sent or resent, shown this once (post/redirect/get).
        "invitation_link": request.session.pop(INVITATION_LINK_SESSION_KEY, None),
    }
    return render(request, "accounts/members.html", context, status=status)


@never_cache  # may hold a new invitation's link, shown once
@require_GET
@requires("members:read")
def members(request: HttpRequest, actor: Actor) -> HttpResponse:
    return _members_page(request)


def _refused(request: HttpRequest, error: Exception, permission: str) -> HttpResponse:
    """A refusal by the service: 403 for someone without the permission at all; otherwise the
    rule that stopped them (self-change, owner protection ...) as a message on the page."""
    if isinstance(error, PermissionDenied) and not request.user.can(permission):
        raise error
    text = "; ".join(error.messages) if isinstance(error, ValidationError) else str(error)
    messages.error(request, text or "You cannot do that.")
    return redirect("accounts:members")


def _send_invitation(request: HttpRequest, invitation: Invitation, token: str) -> bool:
    context = {
        "organization_name": request.tenant.name,
        "inviter": request.user.get_full_name(),
        "role": Role(invitation.role).label,
        "link": _absolute(request, reverse("accounts:invitation-open", kwargs={"token": token})),
        "expires_at": invitation.expires_at,
    }
    try:
        send_mail(
            subject=f"You are invited to join {request.tenant.name} on AgentPlane",
            message=render_to_string("accounts/email/invitation.txt", context),
            from_email=None,
            recipient_list=[invitation.email],
        )
    except Exception:
        logger.exception("could not send the invitation email for invitation %s", invitation.pk)
        return False
    return True


def _remember_link(request: HttpRequest, invitation: Invitation, token: str) -> None:
    """Keep the new link for the next page only, which shows it with a Copy button (for sending
    it another way than email)."""
    link = _absolute(request, reverse("accounts:invitation-open", kwargs={"token": token}))
    request.session[INVITATION_LINK_SESSION_KEY] = {
        "email": invitation.email,
        "link": link,
        "expires_at": invitation.expires_at.strftime("%Y-%m-%d %H:%M"),
    }


@login_required
@require_POST
def invitation_resend(request: HttpRequest, invitation_id: int) -> HttpResponse:
    actor = Actor.from_request(request)
    try:
        invitation, token = services.invitation_resend(actor=actor, invitation_id=invitation_id)
    except Invitation.DoesNotExist as error:
        raise Http404("No such pending invitation.") from error
    except PermissionDenied as error:
        return _refused(request, error, "members:invite")
    _remember_link(request, invitation, token)
    if _send_invitation(request, invitation, token):
        messages.success(request, f"Invitation sent again to {invitation.email}.")
    else:
        messages.error(request, f"The email to {invitation.email} could not be sent.")
    return redirect("accounts:members")


@login_required
@require_POST
def invitation_create(request: HttpRequest) -> HttpResponse:
    actor = Actor.from_request(request)
    # Parse any known role: whether this actor may grant it is the service's decision (which
    # also records a refused attempt).
    form = InvitationForm(request.POST, roles=Role.values)
    if form.is_valid():
        try:
            invitation, token = services.invitation_create(
                actor=actor, email=form.cleaned_data["email"], role=form.cleaned_data["role"]
            )
        except PermissionDenied as error:
            return _refused(request, error, "members:invite")
        except ValidationError as error:
            if not hasattr(error, "error_dict"):
                return _refused(request, error, "members:invite")
            for field, errors in error.error_dict.items():
                form.add_error(field if field in form.fields else None, errors)
        else:
            _remember_link(request, invitation, token)
            if _send_invitation(request, invitation, token):
                messages.success(request, f"Invitation sent to {invitation.email}.")
            else:
                messages.error(
                    request,
                    f"The invitation for {invitation.email} was created but the email could not "
                    "be sent. Revoke it and try again later.",
                )
            return redirect("accounts:members")
    require(actor, "members:invite")
    form.set_roles(services.roles_assignable_by(actor=actor))
    return _members_page(request, form, status=400)


@login_required
@require_POST
def invitation_revoke(request: HttpRequest, invitation_id: int) -> HttpResponse:
    try:
        services.invitation_revoke(actor=Actor.from_request(request), invitation_id=invitation_id)
    except Invitation.DoesNotExist as error:
        raise Http404("No such pending invitation.") from error
    except PermissionDenied as error:
        return _refused(request, error, "members:invite")
    messages.success(request, "Invitation revoked.")
    return redirect("accounts:members")


@login_required
@require_POST
def member_change_role(request: HttpRequest, user_id: int) -> HttpResponse:
    form = RoleChangeForm(request.POST)
    if not form.is_valid():
        require(Actor.from_request(request), "members:manage")
        messages.error(request, "Choose a valid role.")
        return redirect("accounts:members")
    try:
        user = services.member_change_role(
            actor=Actor.from_request(request), user_id=user_id, role=form.cleaned_data["role"]
        )
    except User.DoesNotExist as error:
        raise Http404("No such member.") from error
    except (PermissionDenied, ValidationError) as error:
        return _refused(request, error, "members:manage")
    messages.success(request, f"{user.get_full_name()} is now {Role(user.role).label.lower()}.")
    return redirect("accounts:members")


@login_required
@require_POST
def member_deactivate(request: HttpRequest, user_id: int) -> HttpResponse:
    try:
        user = services.member_deactivate(actor=Actor.from_request(request), user_id=user_id)
    except User.DoesNotExist as error:
        raise Http404("No such member.") from error
    except (PermissionDenied, ValidationError) as error:
        return _refused(request, error, "members:manage")
    messages.success(request, f"{user.get_full_name()} is deactivated and signed out.")
    return redirect("accounts:members")


# --- Invitations ------------------------------------------------------------------------------


@require_GET
def invitation_open(request: HttpRequest, token: str) -> HttpResponse:
    """Keep the token in the session and move on, so it leaves the address bar and history."""
    if len(token) > MAX_TOKEN_LENGTH:
        return _invitation_invalid(request)
    request.session[INVITATION_SESSION_KEY] = token
    response = redirect("accounts:invitation-accept")
    response["Referrer-Policy"] = "no-referrer"
    return response


def _invitation_invalid(request: HttpRequest) -> HttpResponse:
    request.session.pop(INVITATION_SESSION_KEY, None)
    return render(request, "accounts/invitation_invalid.html", status=400)


@never_cache
@require_http_methods(["GET", "POST"])
def invitation_accept(request: HttpRequest) -> HttpResponse:
    token = request.session.get(INVITATION_SESSION_KEY, "")
    invitation = services.invitation_get_pending(token=token) if token else None
    if invitation is None:
        return _invitation_invalid(request)
    form = InvitationAcceptForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            user = services.invitation_accept(
                actor=Actor.anonymous(request),
                token=token,
                password=form.cleaned_data["password"],
                full_name=form.cleaned_data["full_name"],
            )
        except ValidationError as error:
            if _error_codes(error) & {"invitation_invalid", "already_member"}:
                return _invitation_invalid(request)
            form.add_error("password", error.messages)
        else:
            request.session.pop(INVITATION_SESSION_KEY, None)
            login(request, user, backend=MODEL_BACKEND)
            audit_services.login_record(
                actor=Actor.for_user(user, request),
                email=user.email,
                succeeded=True,
                method="invitation",
            )
            messages.success(request, f"Welcome to {request.tenant.name}.")
            return redirect("portal:dashboard")
    status = 400 if form.errors else 200
    context = {"form": form, "invitation": invitation, "role": Role(invitation.role).label}
    return render(request, "accounts/invitation_accept.html", context, status=status)


def _error_codes(error: ValidationError) -> set[str]:
    if hasattr(error, "error_dict"):
        return {item.code for items in error.error_dict.values() for item in items}
    return {item.code for item in error.error_list}


# --- Your profile -----------------------------------------------------------------------------


def _profile_page(
    request: HttpRequest,
    actor: Actor,
    *,
    profile_form: ProfileForm | None = None,
    password_form: PasswordChangeForm | None = None,
    status: int = 200,
) -> HttpResponse:
    sessions = selectors.session_list(actor=actor)
    current = request.session.session_key
    return render(
        request,
        "accounts/profile.html",
        {
            "profile_form": profile_form
            or ProfileForm(initial={"full_name": request.user.full_name}),
            "password_form": password_form or PasswordChangeForm(),
            "sessions": [
                {"entry": entry, "is_current": entry.key == current} for entry in sessions
            ],
            "other_sessions": sum(entry.key != current for entry in sessions),
            **two_factor_state(request),
        },
        status=status,
    )


def _apply_errors(form, error: ValidationError) -> None:
    for field, errors in error.message_dict.items():
        form.add_error(field if field in form.fields else None, errors)


@never_cache
@require_http_methods(["GET", "POST"])
@requires("org:read")
def profile(request: HttpRequest, actor: Actor) -> HttpResponse:
    """Your display name; the sessions you are signed in with."""
    if request.method == "GET":
        return _profile_page(request, actor)
    form = ProfileForm(request.POST)
    if form.is_valid():
        try:
            services.profile_update(actor=actor, full_name=form.cleaned_data["full_name"])
        except ValidationError as error:
            _apply_errors(form, error)
        else:
            messages.success(request, "Your profile is saved.")
            return redirect("accounts:profile")
    return _profile_page(request, actor, profile_form=form, status=400)


@never_cache
@require_POST
@requires("org:read")
def password_change(request: HttpRequest, actor: Actor) -> HttpResponse:
    form = PasswordChangeForm(request.POST)
    if form.is_valid():
        try:
            user = services.password_change(
                actor=actor,
                current_password=form.cleaned_data["current_password"],
                new_password=form.cleaned_data["new_password"],
            )
        except ValidationError as error:
            _apply_errors(form, error)
        else:
            # This browser stays signed in; every other session of yours ends.
            update_session_auth_hash(request, user)
            messages.success(request, "Your password is changed. Your other sessions are ended.")
            return redirect("accounts:profile")
    return _profile_page(request, actor, password_form=form, status=400)


@require_POST
@requires("org:read")
def sessions_end_others(request: HttpRequest, actor: Actor) -> HttpResponse:
    ended = services.sessions_end_others(
        actor=actor, keep_session_key=request.session.session_key or ""
    )
    messages.success(request, f"Signed out of {ended} other session{'s' if ended != 1 else ''}.")
    return redirect("accounts:profile")


# --- Two-factor authentication ------------------------------------------------------------------

SETUP_SECRET_SESSION_KEY = "accounts.two_factor_setup"
NEW_CODES_SESSION_KEY = "accounts.two_factor_new_codes"


def two_factor_state(request: HttpRequest) -> dict:
    """What an account page shows about the signed-in person's two-factor authentication."""
    user = request.user
    return {
        "two_factor_enabled": user.two_factor_enabled,
        "recovery_codes_left": (
            selectors.recovery_codes_remaining(user_id=user.pk) if user.two_factor_enabled else 0
        ),
        "disable_form": TwoFactorProofForm(prefix="disable"),
        "regenerate_form": TwoFactorProofForm(prefix="regenerate"),
    }


def _setup_secret(request: HttpRequest) -> str:
    """The secret being set up in this session (encrypted, as the session keeps it): the same
    one on every reload, until it is confirmed or the session ends."""
    stored = request.session.get(SETUP_SECRET_SESSION_KEY)
    if stored:
        try:
            return two_factor.decrypt_secret(stored, user_id=request.user.pk)
        except two_factor.SecretUnreadable:
            pass
    secret = two_factor.new_secret()
    request.session[SETUP_SECRET_SESSION_KEY] = two_factor.encrypt_secret(
        secret, user_id=request.user.pk
    )
    return secret


def two_factor_setup_page(request: HttpRequest, site: TwoFactorSite) -> HttpResponse:
    """Scan the QR code (or type the key), then confirm with a first code."""
    if request.user.two_factor_enabled:
        messages.info(request, "Two-factor authentication is on already.")
        return redirect(site.account_url)
    secret = _setup_secret(request)
    form = TwoFactorConfirmForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            codes = services.two_factor_enable(
                actor=Actor.from_request(request),
                encrypted_secret=request.session[SETUP_SECRET_SESSION_KEY],
                code=form.cleaned_data["code"],
                keep_session_key=request.session.session_key or "",
            )
        except ValidationError as error:
            _apply_errors(form, error)
        else:
            request.session.pop(SETUP_SECRET_SESSION_KEY, None)
            request.session[NEW_CODES_SESSION_KEY] = codes
            messages.success(request, "Two-factor authentication is on.")
            return redirect(site.codes_url)
    uri = two_factor.provisioning_uri(
        secret,
        account=request.user.email,
        organization=request.tenant.name if request.tenant else "staff",
    )
    context = {
        "form": form,
        "qr_svg": two_factor.qr_svg(uri),
        "setup_key": two_factor.secret_display(secret),
        "setup_key_raw": secret,
        "is_required": two_factor_required(request),
        **site.context(request),
    }
    return render(request, site.setup_template, context, status=400 if form.errors else 200)


def two_factor_codes_page(request: HttpRequest, site: TwoFactorSite) -> HttpResponse:
    """The new recovery codes, shown this once (post/redirect/get, then gone)."""
    codes = request.session.pop(NEW_CODES_SESSION_KEY, None)
    if not codes:
        return redirect(site.account_url)
    return render(request, site.codes_template, {"codes": codes, **site.context(request)})


def two_factor_disable_action(request: HttpRequest, site: TwoFactorSite) -> HttpResponse:
    form = TwoFactorProofForm(request.POST, prefix="disable")
    if form.is_valid():
        try:
            services.two_factor_disable(
                actor=Actor.from_request(request),
                proof=form.cleaned_data["proof"],
                keep_session_key=request.session.session_key or "",
            )
        except ValidationError as error:
            messages.error(request, "; ".join(error.messages))
        else:
            messages.success(
                request, "Two-factor authentication is off. Your other sessions are ended."
            )
    else:
        messages.error(request, "Enter your password or a code to turn it off.")
    return redirect(site.account_url)


def recovery_codes_regenerate_action(request: HttpRequest, site: TwoFactorSite) -> HttpResponse:
    form = TwoFactorProofForm(request.POST, prefix="regenerate")
    if form.is_valid():
        try:
            codes = services.recovery_codes_regenerate(
                actor=Actor.from_request(request), proof=form.cleaned_data["proof"]
            )
        except ValidationError as error:
            messages.error(request, "; ".join(error.messages))
        else:
            request.session[NEW_CODES_SESSION_KEY] = codes
            messages.success(request, "New recovery codes: the old ones no longer work.")
            return redirect(site.codes_url)
    else:
        messages.error(request, "Enter your password or a code to make new recovery codes.")
    return redirect(site.account_url)


@never_cache
@require_http_methods(["GET", "POST"])
@requires("org:read")
def two_factor_setup(request: HttpRequest, actor: Actor) -> HttpResponse:
    return two_factor_setup_page(request, PORTAL_TWO_FACTOR)


@never_cache
@require_GET
@requires("org:read")
def two_factor_codes(request: HttpRequest, actor: Actor) -> HttpResponse:
    return two_factor_codes_page(request, PORTAL_TWO_FACTOR)


@require_POST
@requires("org:read")
def two_factor_disable(request: HttpRequest, actor: Actor) -> HttpResponse:
    return two_factor_disable_action(request, PORTAL_TWO_FACTOR)


@require_POST
@requires("org:read")
def recovery_codes_regenerate(request: HttpRequest, actor: Actor) -> HttpResponse:
    return recovery_codes_regenerate_action(request, PORTAL_TWO_FACTOR)


@login_required
@require_POST
def member_two_factor_reset(request: HttpRequest, user_id: int) -> HttpResponse:
    try:
        user = services.member_two_factor_reset(actor=Actor.from_request(request), user_id=user_id)
    except User.DoesNotExist as error:
        raise Http404("No such member.") from error
    except (PermissionDenied, ValidationError) as error:
        return _refused(request, error, "members:manage")
    messages.success(
        request,
        f"Two-factor authentication of {user.get_full_name()} is off; they are signed out.",
    )
    return redirect("accounts:members")
