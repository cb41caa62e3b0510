@secrets
Feature: A project's secrets reach the service they are for, and nothing else
  Teams keep API keys in MeshHook's vault, sealed at rest, and name them in
  their workflows. The key travels to the order service with every attempt —
  first tries, retries, the retry after a crashed worker, the retry after a
  timeout, the retry an operator asks for — and appears in no run log, run view,
  worker log, live-log frame or report, even when the order service is careless
  enough to repeat it back.
  (Every scenario ends with the same search, in plain, base64, URL-encoded and
  escaped forms; these scenarios make sure there is a key to find.)

  Background:
    Given the project "acme" with the workflow "order-sync":
      | step | type      | does                                                          | then |
      | map  | transform | {id: order.id, total: order.sum}                              | push |
      | push | http_call | POST the mapped order to /orders with the "orders-api" secret | done |
      | done | terminate | succeeded                                                     |      |
    And "acme" keeps the order service's API key in its vault as "orders-api"

  Scenario: The API key goes with the order and stays out of the run log
    When "acme" delivers an order webhook to "order-sync"
    Then the run succeeds
    And the order service received "acme"'s API key with every order
    And the run log names the API key without holding it

  Scenario: Two projects send the same order service each their own key
    Given the project "globex" with the workflow "order-sync":
      | step | type      | does                                                          | then |
      | map  | transform | {id: order.id, total: order.sum}                              | push |
      | push | http_call | POST the mapped order to /orders with the "orders-api" secret | done |
      | done | terminate | succeeded                                                     |      |
    And "globex" keeps the order service's API key in its vault as "orders-api"
    When "acme" delivers an order webhook to "order-sync"
    And "globex" delivers an order webhook to "order-sync"
    Then every run succeeds
    And the order service received "acme"'s API key with every order
    And the order service received "globex"'s API key with every order

  Scenario: An order service that repeats the key in its answer does not get it recorded
    Given the order service repeats the API key it was sent in its answer
    When "acme" delivers an order webhook to "order-sync"
    Then the run succeeds
    And the run log names the API key without holding it

  Scenario: A dashboard watching a run whose order service repeats the key sees the run, and the run goes its usual way
    Given the project "acme" with the workflow "checked-sync":
      | step     | type      | does                                                   | then                |
      | push     | http_call | POST the order to /orders with the "orders-api" secret | check               |
      | check    | branch    | when push answered 200                                 | done, else rejected |
      | done     | terminate | succeeded                                              |                     |
      | rejected | terminate | failed: the order service refused it                   |                     |
    And the order service repeats the API key it was sent in its answer
    And "Priya" opens the live log of "acme"
    When "acme" delivers an order webhook to "checked-sync"
    Then the run succeeds
    And "Priya" saw every event of the run as it happened
    And the run log names the API key without holding it

  @crash
  Scenario: An answer repeating the key, recorded again after its worker died recording it, is kept without the key
    Given the order service repeats the API key it was sent in its answer
    And "Priya" opens the live log of "acme"
    And the worker will crash while the response of "push" is being recorded
    When "acme" delivers an order webhook to "order-sync"
    And a new worker takes over
    Then the run succeeds
    And the order service received "acme"'s API key with every order
    And the run log names the API key without holding it
    And "Priya" sees the run exactly as its run log holds it

  Scenario: Retries carry the key and record none of it
    Given the order service fails 2 times
    When "acme" delivers an order webhook to "order-sync"
    Then the run succeeds
    And the order service received "acme"'s API key with every order
    And the run log names the API key without holding it

  Scenario: A call an operator retries by hand once the order service is back carries the key
    Given the order service answers every order with 503
    And "acme" has a finished run of "order-sync"
    When the order service answers normally again
    And "dana@acme.example" retries "push" because "the order service is back"
    Then the run succeeds
    And the order service received "acme"'s API key with every order
    And the run log names the API key without holding it

  Scenario: The retry after a crashed worker carries the key
    Given the worker will crash after the request of "push" is sent
    When "acme" delivers an order webhook to "order-sync"
    And a new worker takes over
    Then the run succeeds
    And the order service received "acme"'s API key with every order
    And the run log names the API key without holding it

  Scenario: The retry after a timeout carries the key
    Given the order service stalls on the first attempt
    When "acme" delivers an order webhook to "order-sync"
    Then the run succeeds
    And the order service received "acme"'s API key with every order
    And the run log names the API key without holding it

  Scenario: A refused order records why without the key
    Given the order service answers every order with 402
    When "acme" delivers an order webhook to "order-sync"
    Then the run fails because "402"
    And the run log names the API key without holding it

  Scenario: The vault keeps the key sealed in the database
    When "acme" delivers an order webhook to "order-sync"
    Then the run succeeds
    And the database holds "acme"'s API key only sealed

  Scenario: A step naming a key the vault does not hold fails before calling
    Given the project "acme" with the workflow "invoice-sync":
      | step | type      | does                                                       | then |
      | push | http_call | POST the order to /invoices with the "invoices-api" secret | done |
      | done | terminate | succeeded                                                  |      |
    When "acme" delivers an order webhook to "invoice-sync"
    Then the run fails because "no secret \"invoices-api\""
    And the order service was never called
