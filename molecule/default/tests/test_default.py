"""What the default scenario's converge must leave on the hosts."""

from __future__ import annotations

import json
import shlex

from roboshop_testlib import http

PAYMENT_PORT = 8080


def service_env(host) -> dict[str, str]:
    """The payment service's environment: unit Environment= lines, then EnvironmentFile."""
    env: dict[str, str] = {}
    shown = host.check_output("systemctl show --property=Environment --value payment.service")
    env.update(item.split("=", 1) for item in shlex.split(shown) if "=" in item)
    env_file = host.file("/etc/roboshop/payment.env")
    for line in env_file.content_string.splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            env[key.strip()] = value.strip().strip("'\"")
    return env


def test_service_user_exists(payment):
    user = payment.user("roboshop")
    assert user.exists
    assert user.uid != 0
    assert user.shell in ("/sbin/nologin", "/usr/sbin/nologin", "/bin/false")


def test_app_owned_by_service_user(payment):
    app = payment.file("/app")
    assert app.is_directory
    assert (app.user, app.group) == ("root", "roboshop") or app.user == "roboshop"
    current = payment.file("/app/current")
    assert current.is_symlink
    assert current.linked_to.startswith("/app/releases/")
    assert payment.file("/app/current/payment.ini").exists
    assert payment.file("/app/current/venv/bin/uwsgi").is_file


def test_unit_holds_inventory_values(payment, lab_vars):
    env = service_env(payment)
    assert env["CART_HOST"] == lab_vars["roboshop_cart_host"]
    assert env["CART_PORT"] == str(lab_vars["roboshop_cart_port"])
    assert env["USER_HOST"] == lab_vars["roboshop_user_host"]
    assert env["USER_PORT"] == str(lab_vars["roboshop_user_port"])
    assert env["AMQP_HOST"] == lab_vars["roboshop_amqp_host"]
    assert env["AMQP_USER"] == "roboshop"
    assert env["AMQP_PASS"] == lab_vars["vault_roboshop_amqp_password"]
    assert env["PAYMENT_GATEWAY"] == lab_vars["roboshop_payment_gateway"]


def test_password_only_in_the_env_file(payment, lab_vars):
    password = lab_vars["vault_roboshop_amqp_password"]
    assert password not in payment.check_output("systemctl show payment.service")
    assert password not in payment.file("/etc/systemd/system/payment.service").content_string
    env_file = payment.file("/etc/roboshop/payment.env")
    assert (env_file.user, env_file.group, env_file.mode) == ("root", "root", 0o600)


def test_service_enabled_and_running_as_roboshop(payment):
    service = payment.service("payment")
    assert service.is_enabled
    assert service.is_running
    main_pid = payment.check_output("systemctl show --property=MainPID --value payment.service")
    users = payment.check_output("ps -o user= --ppid %s -p %s", main_pid, main_pid).split()
    assert len(users) >= 2, "uWSGI master and at least one worker"
    assert set(users) == {"roboshop"}


def test_port_listening(payment):
    assert payment.socket(f"tcp://0.0.0.0:{PAYMENT_PORT}").is_listening


def test_health_ok(payment):
    code, text = http(payment, "GET", f"http://localhost:{PAYMENT_PORT}/health")
    assert code == 200, text
    health = json.loads(text)
    assert health["rabbitmq"] == "connected"
    assert health["cart"] == "connected"
    assert health["user"] == "connected"


def test_rabbitmq_user_and_queue(rabbitmq):
    assert rabbitmq.service("rabbitmq-server").is_running
    users = rabbitmq.check_output("rabbitmqctl -q list_users")
    assert "roboshop" in users
    queues = rabbitmq.check_output("rabbitmqctl -q list_queues name durable")
    assert any(line.split() == ["orders", "true"] for line in queues.splitlines())


def test_real_payment_is_queued(payment, stubs, take_order, lab_vars):
    cart_url = f"http://{lab_vars['roboshop_cart_host']}:{lab_vars['roboshop_cart_port']}"
    code, text = http(payment, "GET", f"{cart_url}/cart/anonymous-1")
    assert code == 200, text
    cart = json.loads(text)
    assert any(item["sku"] == "SHIP" for item in cart["items"])

    code, text = http(payment, "POST", f"http://localhost:{PAYMENT_PORT}/pay/anonymous-1", cart)
    assert code == 200, text
    orderid = json.loads(text)["orderid"]

    order = take_order(orderid)
    assert order["body"] == {"orderid": orderid, "user": "anonymous-1", "cart": cart}
    assert order["message_id"] == orderid
    assert order["delivery_mode"] == 2  # persistent
    assert (order["exchange"], order["routing_key"]) == ("robot-shop", "orders")

    # The cart was cleared on the (stub) Cart service, on the inventory's cart port.
    code, text = http(stubs, "GET", f"http://localhost:{lab_vars['roboshop_cart_port']}/_calls")
    calls = json.loads(text)
    assert {"method": "DELETE", "path": "/cart/anonymous-1"}.items() <= calls[-1].items()
