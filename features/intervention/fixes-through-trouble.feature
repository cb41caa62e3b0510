@intervention
Feature: An operator's fix holds through crashes and database faults
  An operator's fix is an event like any other, so it must survive what any
  other event survives. A worker that dies after a skip, a worker that dies as
  the timer of a resumed follow-up fires, or a database that drops out while
  the fix lands changes nothing: the run ends as the fix said, the order
  service sees each order at most once per execution, the audit trail names
  the fix once, and the run still replays exactly from its log.

  Background:
    Given the project "acme" with the workflow "order-sync":
      | step     | type      | does                                                                     | then                |
      | map      | transform | {id: order.id, total: order.sum}                                         | push                |
      | push     | http_call | POST the mapped order to /orders, up to 2 attempts, backing off 1 minute | check               |
      | check    | branch    | when push answered 200                                                   | done, else rejected |
      | done     | terminate | succeeded                                                                |                     |
      | rejected | terminate | failed: the order service refused it                                     |                     |
    And the project "acme" with the workflow "order-follow-up":
      | step   | type      | does                         | then   |
      | wait   | delay     | wait 1 hour                  | remind |
      | remind | http_call | POST the order to /reminders | done   |
      | done   | terminate | succeeded                    |        |

  @crash
  Scenario: A refused call skipped by an operator goes on through a worker that dies after the branch
    Given a run of "order-sync" that is failed at "push"
    And the worker will crash after step "check" is recorded
    When "dana@acme.example" skips "push" because "the order was placed by phone", with:
      """json
      { "status": 200, "body": { "orderId": "ord_phone_0042" } }
      """
    And a new worker takes over
    Then the run succeeds
    And the run went through "done"
    And the run replays exactly from its log

  @crash
  Scenario: A follow-up canceled by mistake and resumed sends its reminder once though the worker dies as its timer fires
    Given a run of "order-follow-up" that is waiting in "wait"
    And the worker will crash when the timer of "wait" fires
    When "dana@acme.example" cancels the run because "the customer called to cancel"
    And "lee@acme.example" resumes the run from "wait" because "it was the wrong customer"
    And the run is waiting in "wait"
    And the clock moves forward 1 hour
    And a new worker takes over
    Then the run succeeds
    And the order service received the order exactly once
    And the run replays exactly from its log

  @crash
  Scenario: The audit trail of a call retried by hand through a worker crash names the retry once and one end
    Given a run of "order-sync" that is between attempts of "push"
    And the worker will crash after the request of "push" is sent
    When "lee@acme.example" retries "push" because "the order service is back"
    And a new worker takes over
    Then the run's audit trail reads:
      | what          | by               | reason                    |
      | run started   |                  |                           |
      | retry         | lee@acme.example | the order service is back |
      | run succeeded |                  |                           |

  @db-faults
  Scenario Outline: A call skipped while its order is ready to go is never sent, though <fault>
    Given the worker will stall before the request of "push" is sent
    When "acme" delivers an order webhook to "order-sync"
    And "dana@acme.example" skips "push" during that pause, because "the order was placed by phone", with:
      """json
      { "status": 200, "body": { "orderId": "ord_phone_0042" } }
      """
    And <fault>
    Then the run went through "done"
    And the order service was never called
    And the run replays exactly from its log

    Examples:
      | fault                                       |
      | the database drops the engine's connections |
      | the network to the database is cut          |
      | the database crashes and restarts           |
